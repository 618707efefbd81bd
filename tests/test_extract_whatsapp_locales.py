"""WhatsApp in every language: each export parses to the same messages as its English twin.

Twins from real phones (../shared/data/chats/whatsapp_locales: English, German, Dutch, Russian, iOS and
Android), then one chat written as phones set to 17 other languages write it (their placeholders, digits,
calendars, AM/PM words and date formats), then every header shape with inferred date orders.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from ownlm.extract.base import ExtractOptions, Problem, ReaderError, Source
from ownlm.extract.whatsapp import WhatsAppReader

WA = WhatsAppReader()
LRM = "\u200e"


def read(data: str, opts: ExtractOptions | None = None, name: str = "chat.txt"):
    items = list(WA.read(Source(name, data.encode()), opts or ExtractOptions()))
    return [i for i in items if isinstance(i, Problem)], items[-1]


def messages(conv, minute: bool = False):
    return [(m.name, m.time[:16] if minute else m.time, m.text) for m in conv.messages]


def locale_file(shared_data, name):
    path = shared_data / "chats/whatsapp_locales" / name
    problems, conv = read(path.read_text("utf-8"))
    assert problems == []
    return conv


# ---------------------------------------------------------------- real exports: twins of English


@pytest.mark.parametrize(
    "name, twin",
    [
        ("german_ios.txt", "english_ios.txt"),
        ("russian_ios.txt", "english_ios.txt"),
        ("russian_android.txt", "english_android.txt"),
        ("english_ios_media.txt", "english_ios.txt"),  # the same chat exported with its media files
    ],
)
def test_locale_exports_parse_to_the_same_messages_as_english(shared_data, name, twin):
    # iOS exports made at different moments disagree by a second on a few timestamps: compare minutes.
    got, want = locale_file(shared_data, name), locale_file(shared_data, twin)
    assert messages(got, minute=True) == messages(want, minute=True)
    assert got.meta["system_dropped"] == want.meta["system_dropped"] + 2 * (name == "english_ios_media.txt")
    assert got.meta["media"] == want.meta["media"] and got.meta["location"] == want.meta["location"]
    assert not any("omitted" in m.text or LRM in m.text for m in got.messages)


def test_dutch_export_is_the_english_chat_with_some_messages_left_out(shared_data):
    # The Dutch phone kept a shorter history (and shared another place): its messages must be a
    # subsequence of the English ones once media and locations are normalised.
    dutch = messages(locale_file(shared_data, "dutch_android_media.txt"))
    english = iter(messages(locale_file(shared_data, "english_android_media.txt")))
    assert all(any(d == e for e in english) for d in dutch)
    assert len(dutch) == 31


def test_ios_and_android_exports_of_one_chat_agree(shared_data):
    ios = messages(locale_file(shared_data, "english_ios.txt"), minute=True)
    android = messages(locale_file(shared_data, "english_android.txt"), minute=True)
    android = [(n, t, x) for n, t, x in android if t >= ios[0][1]]  # the iOS export starts later
    assert ios == android


def test_keep_system_keeps_deleted_and_events_with_their_kind(shared_data):
    path = shared_data / "chats/whatsapp_locales/russian_android.txt"
    _, conv = read(path.read_text("utf-8"), ExtractOptions(drop_system=False))
    kinds = [s["kind"] for s in conv.meta["system"]]
    assert kinds.count("deleted") == 8 and kinds.count("system") == 3  # notice + 2 missed calls


# ---------------------------------------------------------------- other languages, as phones write them

ENGLISH = {
    "header": lambda t: f"{t.day}/{t.month}/{t:%y}, {t:%H:%M} - ",
    "media": "<Media omitted>",
    "ios_media": "image omitted",
    "doc": "Report.pdf \u200edocument omitted",
    "attached": "IMG-20240213-WA0001.jpg (file attached)",
    "deleted": "This message was deleted",
    "you_deleted": "You deleted this message",
    "location": "location: https://maps.google.com/?q=52.37,4.89",
    "call": "Missed voice call",
}


def _h12(t):
    return t.hour % 12 or 12, t.hour >= 12


def _digits(s: str, zero: str) -> str:
    return "".join(chr(ord(zero) + int(c)) if c.isdigit() else c for c in s)


LOCALES = {
    "es": {"header": lambda t: f"{t.day}/{t.month}/{t:%y}, {_h12(t)[0]}:{t:%M} {'p. m.' if _h12(t)[1] else 'a. m.'} - ",
           "media": "<Multimedia omitido>", "ios_media": "imagen omitida", "doc": "Report.pdf \u200edocumento omitido",
           "attached": "IMG-20240213-WA0001.jpg (archivo adjunto)", "deleted": "Se eliminó este mensaje.",
           "you_deleted": "Eliminaste este mensaje.", "location": "ubicación: https://maps.google.com/?q=52.37,4.89",
           "call": "Llamada perdida"},
    "pt": {"header": lambda t: f"{t:%d/%m/%Y %H:%M} - ", "media": "<Mídia oculta>", "ios_media": "imagem ocultada",
           "doc": "Report.pdf \u200edocumento omitido", "attached": "IMG-20240213-WA0001.jpg (arquivo anexado)",
           "deleted": "Mensagem apagada", "you_deleted": "Você apagou esta mensagem",
           "location": "localização: https://maps.google.com/?q=52.37,4.89", "call": "Chamada de voz perdida"},
    "fr": {"header": lambda t: f"{t:%d/%m/%Y} à {t:%H:%M} - ", "media": "<Médias omis>", "ios_media": "image absente",
           "doc": "Report.pdf \u200edocument omis", "attached": "IMG-20240213-WA0001.jpg (fichier joint)",
           "deleted": "Ce message a été supprimé", "you_deleted": "Vous avez supprimé ce message",
           "location": "position : https://maps.google.com/?q=52.37,4.89", "call": "Appel vocal manqué"},
    "it": {"header": lambda t: f"{t:%d/%m/%y, %H:%M} - ", "media": "<Media omessi>", "ios_media": "immagine omessa",
           "doc": "Report.pdf \u200edocumento omesso", "attached": "IMG-20240213-WA0001.jpg (file allegato)",
           "deleted": "Questo messaggio è stato eliminato", "you_deleted": "Hai eliminato questo messaggio",
           "location": "posizione: https://maps.google.com/?q=52.37,4.89", "call": "Chiamata vocale persa"},
    "pl": {"header": lambda t: f"{t:%d.%m.%Y, %H:%M} - ", "media": "<pominięto multimedia>",
           "ios_media": "obraz pominięty", "doc": "Report.pdf \u200edokument pominięty",
           "attached": "IMG-20240213-WA0001.jpg (załączono plik)", "deleted": "Ta wiadomość została usunięta",
           "you_deleted": "Usunięto tę wiadomość", "location": "lokalizacja: https://maps.google.com/?q=52.37,4.89",
           "call": "Nieodebrane połączenie głosowe"},
    "cs": {"header": lambda t: f"{t.day}.{t.month}.{t:%y} {t:%H:%M} - ", "media": "<Média vynechána>",
           "ios_media": "obrázek vynechán", "doc": "Report.pdf \u200edokument vynechán",
           "attached": "\u200eIMG-20240213-WA0001.jpg (soubor připojen)", "deleted": "Tato zpráva byla smazána",
           "you_deleted": "Smazali jste tuto zprávu", "location": "poloha: https://maps.google.com/?q=52.37,4.89",
           "call": "Zmeškaný hovor"},
    "uk": {"header": lambda t: f"{t:%d.%m.%y, %H:%M} - ", "media": "<Медіафайли пропущено>",
           "ios_media": "зображення відсутнє", "doc": "Report.pdf \u200eдокумент відсутній",
           "attached": "\u200eIMG-20240213-WA0001.jpg (файл додано)", "deleted": "Це повідомлення видалено",
           "you_deleted": "Ви видалили це повідомлення", "location": "розташування: https://maps.google.com/?q=52.37,4.89",
           "call": "Пропущений аудіодзвінок"},
    "tr": {"header": lambda t: f"{t:%d.%m.%Y %H:%M} - ", "media": "<Medya dahil edilmedi>",
           "ios_media": "görüntü dahil edilmedi", "doc": "Report.pdf \u200ebelge dahil edilmedi",
           "attached": "IMG-20240213-WA0001.jpg (dosya ekli)", "deleted": "Bu mesaj silindi",
           "you_deleted": "Bu mesajı sildiniz", "location": "konum: https://maps.google.com/?q=52.37,4.89",
           "call": "Cevapsız sesli arama"},
    "ar": {"header": lambda t: _digits(f"{t.day}\u200f/{t.month}\u200f/{t.year}، {_h12(t)[0]}:{t:%M}", "٠")
                               + f" {'م' if _h12(t)[1] else 'ص'} - ",
           "media": "<تم استبعاد الوسائط>", "ios_media": "صورة محذوفة", "doc": "Report.pdf \u200eمستند محذوف",
           "attached": "\u200eIMG-20240213-WA0001.jpg (ملف مرفق)", "deleted": "تم حذف هذه الرسالة",
           "you_deleted": "لقد حذفت هذه الرسالة", "location": "الموقع: https://maps.google.com/?q=52.37,4.89",
           "call": "مكالمة صوتية فائتة"},
    "fa": {"header": lambda t: _digits(f"{t:%Y/%m/%d}،\u200f {t:%H:%M}", "۰") + " - ", "media": "<رسانه حذف شد>",
           "ios_media": "تصویر حذف شد", "doc": "Report.pdf \u200eسند حذف شد",
           "attached": "\u200eIMG-20240213-WA0001.jpg (فایل پیوست شد)", "deleted": "این پیام حذف شد",
           "you_deleted": "شما این پیام را حذف کردید", "location": "مکان: https://maps.google.com/?q=52.37,4.89",
           "call": "تماس صوتی بی‌پاسخ"},
    "hi": {"header": lambda t: f"{t.day}/{t.month}/{t:%y}, {_h12(t)[0]}:{t:%M} {'pm' if _h12(t)[1] else 'am'} - ",
           "media": "<मीडिया छोड़ा गया>", "ios_media": "इमेज छोड़ी गई", "doc": "Report.pdf \u200eदस्तावेज़ छोड़ा गया",
           "attached": "IMG-20240213-WA0001.jpg (फ़ाइल संलग्न है)", "deleted": "यह मैसेज डिलीट किया गया",
           "you_deleted": "आपने यह मैसेज डिलीट किया", "location": "लोकेशन: https://maps.google.com/?q=52.37,4.89",
           "call": "मिस्ड वॉइस कॉल"},
    "id": {"header": lambda t: f"{t:%d/%m/%y %H.%M} - ", "media": "<Media tidak disertakan>",
           "ios_media": "gambar tidak disertakan", "doc": "Report.pdf \u200edokumen tidak disertakan",
           "attached": "IMG-20240213-WA0001.jpg (file terlampir)", "deleted": "Pesan ini telah dihapus",
           "you_deleted": "Anda menghapus pesan ini", "location": "lokasi: https://maps.google.com/?q=52.37,4.89",
           "call": "Panggilan suara tak terjawab"},
    "th": {"header": lambda t: f"{t.day}/{t.month}/{t.year + 543 - 2500} {t:%H:%M} - ", "media": "<ไม่รวมสื่อ>",
           "ios_media": "รูปภาพถูกละไว้", "doc": "Report.pdf \u200eเอกสารถูกละไว้",
           "attached": "IMG-20240213-WA0001.jpg (แนบไฟล์)", "deleted": "ข้อความนี้ถูกลบแล้ว",
           "you_deleted": "คุณลบข้อความนี้แล้ว", "location": "ตำแหน่ง: https://maps.google.com/?q=52.37,4.89",
           "call": "สายที่ไม่ได้รับ"},
    "vi": {"header": lambda t: f"{t:%d/%m/%Y}, {t:%H:%M} - ", "media": "<Đã bỏ qua tập tin phương tiện>",
           "ios_media": "hình ảnh bị bỏ qua", "doc": "Report.pdf \u200etài liệu bị bỏ qua",
           "attached": "IMG-20240213-WA0001.jpg (tệp đính kèm)", "deleted": "Tin nhắn này đã bị xóa",
           "you_deleted": "Bạn đã xóa tin nhắn này", "location": "vị trí: https://maps.google.com/?q=52.37,4.89",
           "call": "Cuộc gọi thoại bị nhỡ"},
    "ja": {"header": lambda t: f"R{t.year - 2018}/{t:%m/%d} {t:%H:%M} - ", "media": "<メディアは含まれていません>",
           "ios_media": "画像を省略しました", "doc": "Report.pdf \u200e書類を省略しました",
           "attached": "IMG-20240213-WA0001.jpg (ファイル添付あり)", "deleted": "このメッセージは削除されました",
           "you_deleted": "メッセージを削除しました", "location": "位置情報: https://maps.google.com/?q=52.37,4.89",
           "call": "不在着信"},
    "zh": {"header": lambda t: f"{t.year}/{t.month}/{t.day} {'下午' if _h12(t)[1] else '上午'}{_h12(t)[0]}:{t:%M} - ",
           "media": "<省略影音内容>", "ios_media": "图片已省略", "doc": "Report.pdf \u200e文档已省略",
           "attached": "IMG-20240213-WA0001.jpg (已附加文件)", "deleted": "此消息已删除",
           "you_deleted": "你删除了此消息", "location": "位置: https://maps.google.com/?q=52.37,4.89",
           "call": "未接语音通话"},
    "ko": {"header": lambda t: f"{t:%y}. {t.month}. {t.day}. {'오후' if _h12(t)[1] else '오전'} {_h12(t)[0]}:{t:%M} - ",
           "media": "<미디어 파일 제외됨>", "ios_media": "이미지 생략됨", "doc": "Report.pdf \u200e문서 생략됨",
           "attached": "IMG-20240213-WA0001.jpg (파일 첨부됨)", "deleted": "삭제된 메시지입니다",
           "you_deleted": "메시지를 삭제했습니다", "location": "위치: https://maps.google.com/?q=52.37,4.89",
           "call": "부재중 음성통화"},
}  # fmt: skip


def render(phrases: dict, t0: datetime) -> str:
    """One chat with every kind of line, as an Android phone (and an iOS one, for placeholders) writes it."""
    h = phrases["header"]
    steps = [(0, "Ann: Hi Bob\nsecond line"), (1, f"Bob: {phrases['media']}"), (2, f"Bob: {phrases['media']}\nLook at this"),
             (3, f"Ann: {LRM}{phrases['ios_media']}"), (4, f"Ann: {phrases['doc']}"), (5, f"Bob: {phrases['attached']}"),
             (6, f"Ann: {phrases['deleted']}"), (7, f"Bob: {phrases['you_deleted']}"), (8, f"Ann: {phrases['location']}"),
             (9, f"Bob: {phrases['call']}"), (10, "Ann: ok 👍")]  # fmt: skip
    out = []
    for day, line in steps:
        t = t0 + timedelta(days=day * 2, minutes=day * 7)  # days above 12: the order is provable
        out.append(h(t) + line)
    return "\n".join(out) + "\n"


@pytest.mark.parametrize("lang", sorted(LOCALES))
def test_each_language_parses_to_the_same_messages_as_english(lang):
    t0 = datetime(2024, 2, 9, 9, 5)
    problems, want = read(render(ENGLISH, t0))
    assert problems == [] and [m.text for m in want.messages] == [
        "Hi Bob\nsecond line", "<media>", "Look at this", "<media>", "<media>", "<media>", "<location>", "ok 👍"
    ]  # fmt: skip
    problems, got = read(render(LOCALES[lang], t0))
    assert problems == []
    assert messages(got) == messages(want)
    assert got.meta["system_dropped"] == 3 and got.meta["media"] == 5
    if lang == "th":
        assert got.meta["calendar"] == "buddhist"
    if lang == "ja":
        assert got.meta["calendar"] == "japanese-era"


# ---------------------------------------------------------------- header shapes and date orders


def test_time_before_the_date_ios():
    chat = (
        "[21:41:35, 3/27/22] Dmitry S: Hello World\n\u200e[21:41:55, 3/27/22] Dmitry S: \u200eimage omitted\n"
    )
    assert WA.sniff(Source("_chat.txt", chat.encode()))
    problems, conv = read(chat)
    assert problems == [] and messages(conv) == [
        ("Dmitry S", "2022-03-27T21:41:35", "Hello World"),
        ("Dmitry S", "2022-03-27T21:41:55", "<media>"),
    ]


def test_buddhist_four_digit_years_and_persian_digits():
    _, conv = read("27/03/2565 21:41 - A: สวัสดี\n")
    assert conv.messages[0].time == "2022-03-27T21:41:00" and conv.meta["calendar"] == "buddhist"
    _, conv = read("۱۴۰۳/۰۲/۱۳، ۱۸:۳۰ - A: سلام\n".replace("۱۴۰۳", "۲۰۲۴"))  # Persian digits, Gregorian year
    assert conv.messages[0].time == "2024-02-13T18:30:00"


# 1 Farvardin (Nowruz) in the Gregorian calendar, as Iran's official calendar has it
NOWRUZ = {1388: (2009, 3, 21), 1391: (2012, 3, 20), 1395: (2016, 3, 20), 1398: (2019, 3, 21), 1399: (2020, 3, 20),
          1400: (2021, 3, 21), 1401: (2022, 3, 21), 1402: (2023, 3, 21), 1403: (2024, 3, 20), 1404: (2025, 3, 21)}  # fmt: skip


def test_solar_hijri_dates_convert_to_the_gregorian_calendar():
    from datetime import date

    from ownlm.extract.whatsapp_dates import solar_hijri_leap, solar_hijri_to_gregorian

    for year, gregorian in NOWRUZ.items():
        assert solar_hijri_to_gregorian(year, 1, 1) == gregorian
    # walking the Solar Hijri calendar day by day from Nowruz 1388 steps one Gregorian day at a time
    day = date(*NOWRUZ[1388])
    for year in range(1388, 1410):
        for month in range(1, 13):
            length = 31 if month <= 6 else 30 if month < 12 or solar_hijri_leap(year) else 29
            for d in range(1, length + 1):
                assert solar_hijri_to_gregorian(year, month, d) == (day.year, day.month, day.day)
                day += timedelta(days=1)
            with pytest.raises(ValueError):
                solar_hijri_to_gregorian(year, month, length + 1)


def test_a_persian_calendar_export_reads_like_its_gregorian_twin():
    from ownlm.extract.whatsapp_dates import solar_hijri_to_gregorian

    fa_digits = str.maketrans("0123456789", "۰۱۲۳۴۵۶۷۸۹")
    to_hijri = {solar_hijri_to_gregorian(y, mo, d): (y, mo, d) for y in (1402, 1403) for mo in range(1, 13)
                for d in range(1, 32 if mo <= 6 else 31) if (y, mo, d) != (1402, 12, 30)}  # fmt: skip
    times = [datetime(2023, 12, 30, 9, 5) + timedelta(days=17 * i, minutes=71 * i) for i in range(12)]
    gregorian = "".join(
        f"{t:%Y/%m/%d، %H:%M} - {'AB'[i % 2]}: پیام {'abcdefghijkl'[i]}\n" for i, t in enumerate(times)
    )
    hijri = "".join(
        "{:04d}/{:02d}/{:02d}، {:%H:%M} - {}: پیام {}\n".format(*to_hijri[(t.year, t.month, t.day)], t, "AB"[i % 2], "abcdefghijkl"[i])
        for i, t in enumerate(times)
    )  # fmt: skip
    _, want = read(gregorian)
    problems, got = read(hijri.translate(fa_digits))
    assert problems == [] and messages(got) == messages(want)
    assert got.meta["calendar"] == "solar-hijri" and "calendar" not in want.meta
    _, bad = read("1402/07/31، 10:00 - A: x\n1402/07/29، 10:00 - A: y\n")  # Mehr has 30 days
    assert [m.text for m in bad.messages] == ["y"]


YEAR_FIRST = [
    ("year-first", lambda t: f"{t:%y-%m-%d %H:%M} - "),
    ("year-day-month", lambda t: f"{t:%y-%d-%m %H:%M} - "),
    ("year-first", lambda t: f"[{t:%y/%m/%d, %H:%M:%S}] "),
    ("day-first", lambda t: f"{t:%d-%m-%y %H:%M} - "),
    ("month-first", lambda t: f"{t:%m-%d-%y %H:%M} - "),
]


@pytest.mark.parametrize("order, header", YEAR_FIRST)
def test_two_digit_year_orders_are_read_from_the_whole_file(order, header):
    times = [datetime(2021, 3, 5, 10) + timedelta(days=9 * i, hours=i) for i in range(6)]
    _, conv = read("".join(f"{header(t)}A: m{i}\n" for i, t in enumerate(times)))
    assert [m.time for m in conv.messages] == [t.replace(second=0).isoformat() for t in times]
    assert conv.meta["date_order"] == order


def test_ambiguous_order_is_reported_and_date_order_settles_it():
    chat = "05/06/24, 10:00 - A: x\n05/06/24, 11:00 - B: y\n"
    problems, conv = read(chat)
    (problem,) = problems
    assert problem.where == "chat.txt:1" and "--date-order" in problem.reason
    assert conv.messages[0].time == "2024-06-05T10:00:00"  # day-first, the world's majority
    problems, conv = read(chat, ExtractOptions(date_order="month-first"))
    assert problems == [] and conv.messages[0].time == "2024-05-06T10:00:00"


def test_a_chat_looking_file_without_readable_lines_is_a_reported_problem():
    chat = "2024.13.45 10:00 - A: x\n2024.14.46 10:01 - B: y\n2024.15.47 10:02 - A: z\n"
    assert WA.sniff(Source("chat.txt", chat.encode()))  # never a silent plain document
    with pytest.raises(ReaderError, match="no WhatsApp message lines found"):
        read(chat)


def test_only_system_lines_is_a_reported_problem():
    problems, conv = read(
        "13/02/24, 10:00 - Ann: This message was deleted\n13/02/24, 10:01 - You were added\n"
    )
    assert conv.messages == [] and "no messages" in problems[-1].reason


# ---------------------------------------------------------------- iOS twins: languages, calendars, structure


def _ios(lang: str, **kw) -> tuple[list, object]:
    from chat_twins import ios_chat

    return read(ios_chat(lang, **kw), name="_chat.txt")


def _strip_line_marks(chat: str) -> str:
    """The chat as a copy that lost the marks before each "[" (pasted text): only words can tell then."""
    return "\n".join(line.lstrip("\u200e\u200f") for line in chat.split("\n"))


@pytest.mark.parametrize("lang", ["fr", "pt-PT", "hi", "th", "ja", "vi", "ar", "ar-latn", "cs",
                                  "en-japanese-era", "en-buddhist"])  # fmt: skip
def test_ios_export_in_each_language_parses_like_its_english_twin(lang):
    from chat_twins import MEDIA, MESSAGES

    _, want = _ios("en")
    assert len(want.messages) == MESSAGES and want.meta["media"] == MEDIA and want.meta["system_dropped"] == 4
    problems, got = _ios(lang)
    assert problems == []
    assert messages(got) == messages(want)  # names, times to the second, texts
    assert (got.meta["media"], got.meta["location"], got.meta["system_dropped"]) == (MEDIA, 2, 4)
    calendar = {"en-japanese-era": "japanese-era", "en-buddhist": "buddhist"}.get(lang)
    assert got.meta.get("calendar") == calendar


@pytest.mark.parametrize("lang", ["en", "fr", "pt-PT", "hi", "th", "ja", "vi", "ar", "cs"])
def test_without_the_attachment_shape_the_phrase_tables_still_read_each_language(lang):
    from chat_twins import ios_chat

    _, want = _ios("en")
    problems, got = read(_strip_line_marks(ios_chat(lang)))
    assert problems == [] and messages(got) == messages(want)


def test_ios_export_with_media_files_matches_the_one_without():
    _, want = _ios("en")
    _, got = _ios("en", attached=True)
    assert messages(got) == messages(want) and got.meta["media"] == want.meta["media"]


def test_an_ios_attachment_is_media_by_its_shape_whatever_its_words():
    # a language no table knows: the mark before "[" and the marked placeholder say media; the same words
    # on a line without the mark are an event (dropped), never a message
    chat = (
        "[13/2/24, 10:00:00] Ann: Halo\n"
        "\u200e[13/2/24, 10:00:05] Ann: \u200eqwerty zxcv asdf uiop\n"
        "\u200e[13/2/24, 10:00:09] Ann: Plan.pdf \u200eqwerty zxcv\n"
        "[13/2/24, 10:00:12] Ann: \u200eqwerty zxcv asdf uiop\n"
    )
    problems, conv = read(chat)
    assert problems == [] and [m.text for m in conv.messages] == ["Halo", "<media>", "<media>"]
    assert conv.meta["system_dropped"] == 1
    # every line marked: the shape tells nothing, so a marked 4-word sentence stays an event
    _, conv = read("".join("\u200e" + line + "\n" for line in chat.splitlines() if "Plan" not in line))
    assert [m.text for m in conv.messages] == ["Halo"] and conv.meta["system_dropped"] == 2


def test_an_edit_marker_in_any_language_is_stripped_and_the_text_kept():
    chat = (
        "[13/2/24, 10:00:00] Ann: Hallo\n"
        "\u200e[13/2/24, 10:00:05] Ann: Vi ses i morgon \u200e<Det här meddelandet har redigerats>\n"
        "[13/2/24, 10:00:09] Bob: Ja \u200e<Det här meddelandet har redigerats>\n"
        "\u200e[13/2/24, 10:00:12] Bob: \u200e<bifogad: 00000012-PHOTO-2024-01-02-10-00-12.jpg>\n"
    )
    problems, conv = read(chat)
    assert problems == [] and [m.text for m in conv.messages] == ["Hallo", "Vi ses i morgon", "Ja", "<media>"]


def test_arabic_ios_marks_after_the_bracket_and_arabic_indic_digits():
    problems, conv = _ios("ar-latn")
    _, indic = _ios("ar")
    assert problems == [] and conv.messages[0].time == "2022-03-27T21:42:23"
    assert messages(conv) == messages(indic)


def test_japanese_era_after_month_and_day_converts():
    problems, conv = read("[12/20/R5, 14:05:12] Ann: こんにちは\n[1/7/R6, 09:00:00] Bob: はい\n")
    times = [m.time for m in conv.messages]
    assert problems == [] and times == ["2023-12-20T14:05:12", "2024-01-07T09:00:00"]
    assert conv.meta["calendar"] == "japanese-era"
    # the era's name first, in kanji
    _, conv = read("[令和5/12/20 14:05:12] Ann: こんにちは\n[令和6/1/7 09:00:00] Bob: はい\n")
    assert [m.time for m in conv.messages] == times and conv.meta["calendar"] == "japanese-era"
    _, conv = read("[20/12/2566 BE, 14:05:12] Ann: สวัสดี\n[21/12/2566 BE, 09:00:00] Bob: ครับ\n")
    assert [m.time for m in conv.messages] == ["2023-12-20T14:05:12", "2023-12-21T09:00:00"]
    assert conv.meta["calendar"] == "buddhist"


def test_czech_android_deleted_messages_are_not_messages():
    from chat_twins import ANDROID_MEDIA, ANDROID_MESSAGES, CS_ANDROID, EN_ANDROID, android_chat

    _, want = read(android_chat(EN_ANDROID, czech_dates=False))
    problems, got = read(android_chat(CS_ANDROID, czech_dates=True))
    assert problems == [] and messages(got) == messages(want)
    assert len(got.messages) == ANDROID_MESSAGES and got.meta["media"] == ANDROID_MEDIA
    assert got.meta["system_dropped"] == want.meta["system_dropped"] == 5  # notice, 3 deleted, a missed call


def test_an_event_with_a_colon_is_not_a_message_from_a_new_sender():
    chat = (
        "27.03.22 21:41 - Ann: Ahoj\n27.03.22 21:42 - Bob: Nazdar\n"
        "27.03.22 21:43 - Ann změnila název skupiny na: Výlet 2022\n"
        "27.03.22 21:44 - Ann: Tak jedeme\n27.03.22 21:45 - Ann Marie: Já taky\n"
    )
    problems, conv = read(chat)
    assert problems == [] and [(m.name, m.text) for m in conv.messages] == [
        ("Ann", "Ahoj"), ("Bob", "Nazdar"), ("Ann", "Tak jedeme"), ("Ann Marie", "Já taky")
    ]  # fmt: skip
    assert conv.meta["system_dropped"] == 1


def test_hindi_placeholders_match_whether_nukta_letters_are_composed_or_not():
    for word in ("डॉक्यूमेंट छो\u095cा गया", "डॉक्यूमेंट छो\u0921\u093cा गया"):
        _, conv = read(f"[13/2/24, 10:00:00] Ann: नमस्ते\n[13/2/24, 10:00:05] Ann: Plan.pdf \u200e{word}\n")
        assert [m.text for m in conv.messages] == ["नमस्ते", "<media>"]
