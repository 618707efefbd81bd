"""``ownlm serve``: an OpenAI-compatible HTTP server (FastAPI) over one checkpoint, with a batched decoding loop
and a static web chat page.

    engine.py        the decoding loop: requests join and leave between steps, a KV cache slot per sequence
    app.py           the FastAPI app: /v1/models, /v1/completions, /v1/chat/completions, /health, the page at /
    static/          index.html, the chat page (one file, no build step)
    cli.py           ``ServeConfig`` and ``main``: load the run, start uvicorn
"""
