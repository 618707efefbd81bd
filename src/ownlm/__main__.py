from ownlm.cli import main

raise SystemExit(main())
