"""One WhatsApp chat as phones set to other languages and calendars export it: twins of an English export.

The chat (written for these tests) has 20 messages, 14 of them media of every kind (photos, a video, a voice
note, a contact card, stickers, documents with and without a page count, a GIF), a place and a location,
and 4 lines WhatsApp wrote (the encryption notice, two deleted messages, a security-code change). Each
language row holds what its phones write, as WhatsApp's published translations and real exports show them:
the timestamp (digits, marks, order, calendar) and the placeholders. The layout is iOS's: an attachment's
line opens with a direction mark before its "[" (U+200E, or U+200F in Arabic) and its placeholder is marked
inside the text; deleted messages and events carry the mark in the text only. Hindi is written as WhatsApp
writes it: "ड़" precomposed (U+095C), which keyboards type as two code points.

Used by ``tests/test_extract_whatsapp_locales.py`` and ``bench/bench_chats.py``.
"""

from __future__ import annotations

from datetime import datetime, timedelta

LRM, RLM, NBSP = "\u200e", "\u200f", "\u00a0"
START = datetime(2022, 3, 27, 21, 41, 35)


def _digits(s: str, zero: str) -> str:
    return "".join(chr(ord(zero) + int(c)) if c.isdigit() else c for c in s)


def _us(t: datetime, comma: bool = True) -> str:
    return f"[{t.month}/{t.day}/{t:%y}{',' if comma else ''} {t:%H:%M:%S}] "


def _arabic(t: datetime) -> str:  # Arabic-Indic digits, right-to-left marks, 12 h with "م"/"ص"
    h = t.hour % 12 or 12
    stamp = f"{t.day}{RLM}/{t.month}{RLM}/{t.year}، {h}:{t:%M:%S}"
    return f"[{_digits(stamp, '٠')}{NBSP}{'م' if t.hour >= 12 else 'ص'}] "


# kind -> words; "{n}" in pages is the page count; "doc" follows the document's name
IOS: dict[str, dict] = {
    "en": {"header": _us, "image": "image omitted", "video": "video omitted", "audio": "audio omitted",
           "contact": "Contact card omitted", "sticker": "sticker omitted", "doc": "document omitted",
           "pages": "{n} pages", "gif": "GIF omitted", "you_deleted": "You deleted this message.",
           "deleted": "This message was deleted.", "location": "Location",
           "notice": "Messages and calls are end-to-end encrypted."},
    "fr": {"header": lambda t: _us(t, False), "image": "image absente", "video": "vidéo absente",
           "audio": "audio omis", "contact": "Fiche contact manquante", "sticker": "sticker omis",
           "doc": "document manquant", "pages": "{n} pages", "gif": "GIF retiré",
           "you_deleted": "Vous avez supprimé ce message.", "deleted": "Ce message a été supprimé.",
           "location": "Localisation", "notice": "Les messages et les appels sont chiffrés de bout en bout."},
    "pt-PT": {"header": lambda t: _us(t, False), "image": "imagem não revelada", "video": "vídeo não revelado",
              "audio": "ficheiro de áudio não revelado", "contact": "Contacto não revelado",
              "sticker": "sticker não revelado", "doc": "documento não revelado", "pages": "{n} páginas",
              "gif": "GIF não revelada", "you_deleted": "Apagou esta mensagem.",
              "deleted": "Esta mensagem foi apagada.", "location": "Localização",
              "notice": "As mensagens e chamadas são encriptadas ponto a ponto."},
    "hi": {"header": _us, "image": "फ़ोटो हटाई गई", "video": "वीडियो छो\u095cा गया", "audio": "ऑडियो हटाई गयी",
           "contact": "कॉन्टैक्ट कार्ड छो\u095cा गया", "sticker": "स्टिकर छो\u095cा गया", "doc": "डॉक्यूमेंट छो\u095cा गया",
           "pages": "{n} पन्ने", "gif": "GIF छो\u095cा गया", "you_deleted": "आपने यह मैसेज डिलीट किया.",
           "deleted": "यह मैसेज डिलीट कर दिया गया है.", "location": "लोकेशन",
           "notice": "मैसेजेस और कॉल्स एंड-टू-एंड एन्क्रिप्टेड हैं."},
    "th": {"header": lambda t: _us(t, False), "image": "ไม่มีรูปภาพ", "video": "วิดีโอถูกลบ",
           "audio": "ไม่มีไฟล์เสียง", "contact": "บัตรรายชื่อที่ละเว้น", "sticker": "ไม่มีสติกเกอร์",
           "doc": "ละเว้นเอกสาร", "pages": "{n} หน้า", "gif": "ละเว้น GIF", "you_deleted": "คุณได้ลบข้อความนี้",
           "deleted": "ข้อความนี้ถูกลบแล้ว", "location": "ตำแหน่งที่ตั้ง",
           "notice": "ข้อความและการโทรได้รับการเข้ารหัสจากต้นทางถึงปลายทาง"},
    "ja": {"header": lambda t: _us(t, False), "image": "画像は含まれていません", "video": "ビデオは含まれていません",
           "audio": "音声は含まれていません", "contact": "連絡先カードを省略", "sticker": "スタンプは含まれていません",
           "doc": "ドキュメントは含まれていません", "pages": "ページ数: {n}", "gif": "GIFは含まれていません",
           "you_deleted": "このメッセージを削除しました。", "deleted": "このメッセージは削除されました。",
           "location": "位置情報", "notice": "メッセージと通話はエンドツーエンド暗号化されています。"},
    "vi": {"header": lambda t: f"[{t:%H:%M:%S}, {t.month}/{t.day}/{t:%y}] ", "image": "đã bỏ qua hình ảnh",
           "video": "đã bỏ video", "audio": "bỏ qua tệp âm thanh", "contact": "Bỏ qua thẻ liên lạc",
           "sticker": "đã bỏ sticker", "doc": "đã bỏ qua tài liệu", "pages": "{n} trang", "gif": "Đã bỏ qua ảnh GIF",
           "you_deleted": "Bạn đã xoá tin nhắn này.", "deleted": "Tin nhắn này đã bị xóa.", "location": "Vị trí",
           "notice": "Tin nhắn và cuộc gọi được mã hóa đầu cuối."},
    "ar": {"header": _arabic, "mark": RLM, "image": "لم يتم إدراج الصورة", "video": "لم يتم إدراج الفيديوهات",
           "audio": "لم يتم إدراج المقاطع الصوتية", "contact": "لم يتم إدراج بطاقة جهة اتصال",
           "sticker": "تم حذف الملصقات", "doc": "لم يتم إدراج المستند", "pages": "صفحتان {n}",
           "gif": "لم يتم إدراج صورة GIF", "you_deleted": "أنت حذفت هذه الرسالة.", "deleted": "تم حذف هذه الرسالة.",
           "location": "موقع", "notice": "الرسائل والمكالمات مشفرة تمامًا بين الطرفين."},
    "cs": {"header": lambda t: _us(t, False), "image": "obrázek vynechán", "video": "video vynecháno",
           "audio": "zvukový soubor vynechán", "contact": "Vizitka vynechána", "sticker": "nálepka vynechána",
           "doc": "dokument vynechán", "pages": "{n} strany", "gif": "GIF vynechán",
           "you_deleted": "Tuto zprávu jste smazal/a.", "deleted": "Tato zpráva byla smazána.", "location": "Poloha",
           "notice": "Zprávy a hovory jsou zabezpečeny koncovým šifrováním."},
}  # fmt: skip
# The same words, other timestamps: Arabic with Latin digits and a mark after "[", and the calendars an
# English iPhone can be set to (Japanese era "R4" = Reiwa 4 = 2022, after month and day; Buddhist "2565 BE").
IOS["ar-latn"] = {**IOS["ar"], "header": lambda t: f"[{RLM}{t.day}{RLM}/{t.month}{RLM}/{t.year}، {t:%H:%M:%S}] "}  # fmt: skip
IOS["en-japanese-era"] = {**IOS["en"], "header": lambda t: f"[{t.month}/{t.day}/R{t.year - 2018}, {t:%H:%M:%S}] "}  # fmt: skip
IOS["en-buddhist"] = {**IOS["en"], "header": lambda t: f"[{t.month}/{t.day}/{t.year + 543} BE, {t:%H:%M:%S}] "}  # fmt: skip


def ios_chat(lang: str, attached: bool = False) -> str:
    """The chat as an iPhone set to ``lang`` exports it; ``attached``: exported with its media files (English
    only: "<attached: 00000012-PHOTO-2022-03-27-21-42-05.jpg>" instead of "image omitted")."""
    w = IOS[lang]
    mark = w.get("mark", LRM)
    n = [0]

    def file(kind: str, ext: str, t: datetime, name: str = "") -> str:
        n[0] += 1
        stem = name or f"{kind}-{t:%Y-%m-%d-%H-%M-%S}.{ext}"
        return f"<attached: {n[0] + 11:08d}-{stem}>"

    def media(kind: str, t: datetime, ext: str = "jpg", doc: str = "", pages: int = 0) -> str:
        if attached:
            placeholder = file(kind.upper(), ext, t, doc)
        else:
            placeholder = w[{"photo": "image"}.get(kind, kind)]
        head = f"{doc} " if doc and kind == "doc" else ""
        if head and pages:
            head = f"{doc} • {mark}{w['pages'].format(n=pages)} "
        return f"{head}{mark}{placeholder}"

    steps = [
        (False, "Bob", lambda t: f"{mark}{w['notice']}"),
        (False, "Ann", lambda t: "Hi Bob, here are the trip photos"),
        (True, "Ann", lambda t: media("photo", t)),
        (True, "Ann", lambda t: media("photo", t)),
        (True, "Ann", lambda t: media("video", t, "mp4")),
        (True, "Ann", lambda t: media("audio", t, "opus")),
        (False, "Ann", lambda t: "Vondelpark (Amsterdam, Netherlands): https://foursquare.com/v/4b0588cbf964a5203bd522e3"),
        (False, "Ann", lambda t: "😊"),
        (True, "Ann", lambda t: media("contact", t, doc="Carla.vcf")),
        (True, "Ann", lambda t: media("sticker", t, "webp")),
        (True, "Ann", lambda t: media("sticker", t, "webp")),
        (True, "Ann", lambda t: media("doc", t, doc="Notes.txt")),
        (True, "Ann", lambda t: media("doc", t, doc="Plan.pdf", pages=3)),
        (True, "Ann", lambda t: media("doc", t, doc="Budget.xlsx")),
        (False, "Ann", lambda t: f"{mark}{w['you_deleted']}"),
        (True, "Ann", lambda t: media("photo", t)),
        (True, "Ann", lambda t: media("gif", t, "mp4")),
        (False, "Ann", lambda t: "Is this a reply to the photo?"),
        (False, "Bob", lambda t: "Hello again"),
        (True, "Bob", lambda t: media("photo", t)),
        (False, "Bob", lambda t: f"{mark}{w['deleted']}"),
        (True, "Bob", lambda t: media("video", t, "mp4")),
        (False, "Bob", lambda t: f"{mark}{w['location']}: https://maps.google.com/?q=52.358,4.868"),
    ]  # fmt: skip
    out = []
    for i, (attachment, sender, text) in enumerate(steps):
        t = START + timedelta(seconds=48 * i)
        out.append(f"{mark if attachment else ''}{w['header'](t)}{sender}: {text(t)}")
    t = START + timedelta(days=32, hours=-1)
    out.append(f"{w['header'](t)}Bob: {mark}{mark}Security code changed. {mark}Tap to learn more.")
    return "\r\n".join(out) + "\r\n"


# What the English twin parses to: 20 messages, 14 of them media.
MESSAGES, MEDIA = 20, 14

# Android in Czech: deleted messages ("odstraněna"), media and attachments, an event without a sender.
CS_ANDROID = {"media": "<Média vynechány>", "attached": "\u200eCarla.vcf (soubor byl přiložen)",
              "deleted": "Tato zpráva byla odstraněna.", "you_deleted": "Tuto zprávu jste odstranil/a.",
              "location": "poloha: https://maps.google.com/?q=52.358,4.868", "call": "Zmeškaný hovor",
              "notice": "Zprávy a hovory jsou zabezpečeny koncovým šifrováním. Další informace zobrazíte klepnutím."}  # fmt: skip
EN_ANDROID = {"media": "<Media omitted>", "attached": "Carla.vcf (file attached)",
              "deleted": "This message was deleted", "you_deleted": "You deleted this message",
              "location": "location: https://maps.google.com/?q=52.358,4.868", "call": "Missed voice call",
              "notice": "Messages and calls are end-to-end encrypted. No one outside of this chat, not even "
                        "WhatsApp, can read or listen to them. Tap to learn more."}  # fmt: skip


def android_chat(words: dict, czech_dates: bool) -> str:
    """An Android export: 12 messages (7 media), 3 deleted, a missed call and the notice."""
    steps = [(None, words["notice"]), ("Ann", "Hello"), ("Ann", words["media"]), ("Ann", words["media"]),
             ("Ann", words["deleted"]), ("Bob", words["you_deleted"]), ("Ann", words["attached"]),
             ("Ann", words["media"] + "\nCaption: the lake"), ("Ann", words["location"]), ("Bob", words["call"]),
             ("Bob", "Nice: thanks!"), ("Ann", words["deleted"]), ("Ann", words["media"]), ("Bob", "😊"),
             ("Ann", words["media"]), ("Bob", "See you at 10:30"), ("Ann", words["media"])]  # fmt: skip
    out = []
    for i, (sender, text) in enumerate(steps):
        t = START + timedelta(minutes=13 * i)
        stamp = f"{t:%d.%m.%y %H:%M}" if czech_dates else f"{t:%d/%m/%Y, %H:%M}"
        out.append(f"{stamp} - {sender + ': ' if sender else ''}{text}")
    return "\n".join(out) + "\n"


ANDROID_MESSAGES, ANDROID_MEDIA = 12, 7
