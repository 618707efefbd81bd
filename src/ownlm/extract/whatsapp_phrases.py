"""What WhatsApp writes in the phone's language, for what the export's structure cannot tell.

Structure decides most things (see ``whatsapp.classify``): on iOS a left-to-right mark opens every text
WhatsApp wrote itself; Android writes media as one bracketed line ("<Media omitted>") and attachments as
"FILE.ext (file attached)"; locations are a word, a colon and a maps link. What is left needs words:
deleted messages and missed calls on Android carry no mark, and where an iOS export lacks the attachment
shape (a mark before the line's "["), a marked text is media, deleted or an event by its words alone. One row per language (the 20 most used on WhatsApp and a few
more); "omitted" lists the last word(s) of iOS media placeholders ("image omitted", "Bild weggelassen"),
"omitted_first" the first ones where a language starts with them ("đã bỏ qua hình ảnh"). Texts are
matched in NFC (``nfc``).

>>> DELETED.match("Dit bericht is verwijderd") is not None, OMITTED.search("документ отсутствует") is not None
(True, True)
"""

from __future__ import annotations

import re
import unicodedata

PHRASES: dict[str, dict[str, list[str]]] = {
    "en": {
        "deleted": ["This message was deleted", "You deleted this message", "This message was deleted by admin"],
        "omitted": ["omitted"],
        "system": ["Missed voice call", "Missed video call", "Missed group voice call", "Missed group video call",
                   "Waiting for this message. This may take a while", "Waiting for this message"],
        "edited": ["This message was edited"],
    },
    "es": {
        "deleted": ["Se eliminó este mensaje", "Eliminaste este mensaje", "Este mensaje fue eliminado"],
        "omitted": ["omitido", "omitida", "omitidos"],
        "system": ["Llamada perdida", "Llamada de voz perdida", "Videollamada perdida",
                   "Esperando el mensaje", "Esperando este mensaje"],
        "edited": ["Se editó este mensaje", "Mensaje editado"],
    },
    "pt": {
        "deleted": ["Mensagem apagada", "Você apagou esta mensagem", "Esta mensagem foi apagada",
                    "Apagou esta mensagem", "Esta mensagem foi eliminada", "Eliminou esta mensagem",
                    "Esta mensagem foi apagada"],
        "omitted": ["omitido", "omitida", "ocultado", "ocultada", "não revelado", "não revelada"],
        "system": ["Chamada de voz perdida", "Chamada de vídeo perdida", "Aguardando mensagem",
                   "Aguardando esta mensagem"],
        "edited": ["Mensagem editada", "Esta mensagem foi editada"],
    },
    "de": {
        "deleted": ["Diese Nachricht wurde gelöscht", "Du hast diese Nachricht gelöscht",
                    "Sie haben diese Nachricht gelöscht"],
        "omitted": ["weggelassen", "ausgelassen"],
        "system": ["Verpasster Sprachanruf", "Verpasster Videoanruf", "Verpasster Gruppensprachanruf",
                   "Warten auf diese Nachricht"],
        "edited": ["Diese Nachricht wurde bearbeitet", "Nachricht bearbeitet"],
    },
    "fr": {
        "deleted": ["Ce message a été supprimé", "Vous avez supprimé ce message"],
        "omitted": ["omis", "omise", "absent", "absente", "manquant", "manquante", "retiré", "retirée"],
        "system": ["Appel vocal manqué", "Appel vidéo manqué", "En attente de ce message"],
        "edited": ["Ce message a été modifié", "Message modifié"],
    },
    "it": {
        "deleted": ["Questo messaggio è stato eliminato", "Hai eliminato questo messaggio"],
        "omitted": ["omesso", "omessa", "omessi", "escluso", "esclusa"],
        "system": ["Chiamata vocale persa", "Videochiamata persa", "In attesa di questo messaggio"],
        "edited": ["Questo messaggio è stato modificato", "Messaggio modificato"],
    },
    "nl": {
        "deleted": ["Dit bericht is verwijderd", "U hebt dit bericht verwijderd", "Je hebt dit bericht verwijderd"],
        "omitted": ["weggelaten"],
        "system": ["Gemiste spraakoproep", "Gemiste video-oproep", "Gemiste groepsspraakoproep",
                   "Wachten op dit bericht"],
        "edited": ["Dit bericht is bewerkt", "Bericht bewerkt"],
    },
    "ru": {
        "deleted": ["Данное сообщение удалено", "Это сообщение удалено", "Вы удалили данное сообщение",
                    "Вы удалили это сообщение"],
        "omitted": ["отсутствует", "не добавлен", "не добавлено", "не добавлена", "пропущено", "опущено"],
        "system": ["Пропущенный аудиозвонок", "Пропущенный видеозвонок", "Пропущенный голосовой звонок",
                   "Ожидание сообщения"],
        "edited": ["Сообщение изменено", "Это сообщение изменено"],
    },
    "uk": {
        "deleted": ["Це повідомлення видалено", "Ви видалили це повідомлення", "Це повідомлення було видалено"],
        "omitted": ["відсутнє", "відсутній", "відсутня", "пропущено", "не додано"],
        "system": ["Пропущений аудіодзвінок", "Пропущений відеодзвінок", "Очікування повідомлення"],
        "edited": ["Повідомлення змінено"],
    },
    "pl": {
        "deleted": ["Ta wiadomość została usunięta", "Usunięto tę wiadomość", "Usunąłeś tę wiadomość",
                    "Usunęłaś tę wiadomość"],
        "omitted": ["pominięty", "pominięte", "pominięta", "pominięto"],
        "system": ["Nieodebrane połączenie głosowe", "Nieodebrane połączenie wideo", "Oczekiwanie na tę wiadomość"],
        "edited": ["Ta wiadomość została edytowana", "Wiadomość edytowana"],
    },
    "cs": {
        "deleted": ["Tato zpráva byla smazána", "Smazali jste tuto zprávu", "Tuto zprávu jste smazali",
                    "Tato zpráva byla odstraněna", "Tuto zprávu jste odstranil/a", "Tuto zprávu jste odstranil",
                    "Tuto zprávu jste odstranila", "Tuto zprávu jste smazal/a"],
        "omitted": ["vynechán", "vynechána", "vynecháno", "vynechány"],
        "system": ["Zmeškaný hovor", "Zmeškaný videohovor", "Čeká se na tuto zprávu"],
        "edited": ["Tato zpráva byla upravena"],
    },
    "tr": {
        "deleted": ["Bu mesaj silindi", "Bu mesajı sildiniz", "Bu mesajı sildin"],
        "omitted": ["dahil edilmedi", "atlandı", "eklenmedi"],
        "system": ["Cevapsız sesli arama", "Cevapsız görüntülü arama", "Bu mesaj bekleniyor"],
        "edited": ["Bu mesaj düzenlendi", "Düzenlendi"],
    },
    "ar": {
        "deleted": ["تم حذف هذه الرسالة", "لقد حذفت هذه الرسالة", "حذفت هذه الرسالة", "أنت حذفت هذه الرسالة",
                    "لقد حذَفت هذه الرسالة"],
        "omitted": ["محذوف", "محذوفة", "تم استبعاده", "تم استبعادها", "غير مرفق"],
        "omitted_first": ["لم يتم إدراج", "تم حذف الملصقات"],
        "system": ["مكالمة صوتية فائتة", "مكالمة فيديو فائتة", "في انتظار هذه الرسالة"],
        "edited": ["تم تعديل هذه الرسالة"],
    },
    "fa": {
        "deleted": ["این پیام حذف شد", "شما این پیام را حذف کردید", "این پیام را حذف کردید"],
        "omitted": ["حذف شد", "ارسال نشد", "پیوست نشد"],
        "system": ["تماس صوتی بی‌پاسخ", "تماس تصویری بی‌پاسخ", "در انتظار این پیام"],
        "edited": ["این پیام ویرایش شد"],
    },
    "hi": {
        "deleted": ["यह मैसेज डिलीट किया गया", "आपने यह मैसेज डिलीट किया", "यह संदेश हटाया गया",
                    "आपने यह संदेश हटाया", "यह मैसेज डिलीट कर दिया गया है"],
        "omitted": ["छोड़ा गया", "छोड़ी गई", "हटाया गया", "हटाई गई", "हटाई गयी", "शामिल नहीं है"],
        "system": ["मिस्ड वॉइस कॉल", "मिस्ड वीडियो कॉल", "इस मैसेज का इंतज़ार है"],
        "edited": ["यह मैसेज एडिट किया गया"],
    },
    "id": {
        "deleted": ["Pesan ini telah dihapus", "Anda menghapus pesan ini", "Pesan ini dihapus"],
        "omitted": ["tidak disertakan", "dihilangkan", "tidak dilampirkan"],
        "system": ["Panggilan suara tak terjawab", "Panggilan video tak terjawab", "Menunggu pesan ini"],
        "edited": ["Pesan ini telah diedit", "Pesan diedit"],
    },
    "th": {
        "deleted": ["ข้อความนี้ถูกลบแล้ว", "คุณลบข้อความนี้แล้ว", "ข้อความนี้ถูกลบ", "คุณได้ลบข้อความนี้"],
        "omitted": ["ถูกละไว้", "ไม่ได้แนบ", "ถูกข้าม", "ที่ละเว้น", "ถูกลบ"],
        "omitted_first": ["ไม่มี", "ละเว้น"],
        "system": ["สายที่ไม่ได้รับ", "วิดีโอคอลที่ไม่ได้รับ", "กำลังรอข้อความนี้"],
        "edited": ["ข้อความนี้ถูกแก้ไขแล้ว"],
    },
    "vi": {
        "deleted": ["Tin nhắn này đã bị xóa", "Bạn đã xóa tin nhắn này", "Tin nhắn này đã bị thu hồi",
                    "Tin nhắn này đã bị xoá", "Bạn đã xoá tin nhắn này"],
        "omitted": ["bị bỏ qua", "đã bị bỏ qua", "bị lược bỏ", "không đính kèm"],
        "omitted_first": ["đã bỏ qua", "đã bỏ", "bỏ qua"],
        "system": ["Cuộc gọi thoại bị nhỡ", "Cuộc gọi video bị nhỡ", "Đang chờ tin nhắn này"],
        "edited": ["Tin nhắn này đã được chỉnh sửa"],
    },
    "ja": {
        "deleted": ["このメッセージは削除されました", "メッセージを削除しました", "このメッセージを削除しました"],
        "omitted": ["省略", "が省略されました", "を省略しました", "は含まれていません"],
        "system": ["不在着信(音声)", "不在着信(ビデオ)", "不在着信", "このメッセージを待っています"],
        "edited": ["このメッセージは編集されました"],
    },
    "zh": {
        "deleted": ["此消息已删除", "你删除了此消息", "你已删除此消息", "此訊息已刪除", "你已刪除此訊息",
                    "你刪除了此訊息"],
        "omitted": ["已省略", "已忽略", "省略", "已略去"],
        "system": ["未接语音通话", "未接视频通话", "未接語音通話", "未接視訊通話", "正在等待此消息"],
        "edited": ["此消息已编辑", "此訊息已編輯"],
    },
    "ko": {
        "deleted": ["삭제된 메시지입니다", "메시지를 삭제했습니다", "이 메시지는 삭제되었습니다"],
        "omitted": ["생략됨", "제외됨", "누락됨"],
        "system": ["부재중 음성통화", "부재중 영상통화", "이 메시지를 기다리는 중"],
        "edited": ["이 메시지는 수정되었습니다", "수정됨"],
    },
}  # fmt: skip


_UNSPACED = re.compile(r"[\u0e00-\u0e7f\u3040-\u30ff\u3400-\u9fff\uac00-\ud7af]")


def nfc(text: str) -> str:
    """The composed form phrases are matched in: WhatsApp's Hindi writes "ड़" as one code point (U+095C),
    a keyboard as two; NFC makes both "ड" + nukta."""
    return unicodedata.normalize("NFC", text)


def _words(kind: str, spaced: bool | None = None) -> list[str]:
    words = {nfc(p) for row in PHRASES.values() for p in row.get(kind, [])}
    if spaced is not None:
        words = {w for w in words if spaced != bool(_UNSPACED.match(w))}
    return sorted(words, key=len, reverse=True)


def _alternation(kind: str, spaced: bool | None = None) -> str:
    return "|".join(re.escape(w) for w in _words(kind, spaced))


# Whole texts (a final "." optional): deleted messages and events written under a sender's name.
DELETED = re.compile(rf"^(?:{_alternation('deleted')})\.?$", re.I)
SYSTEM = re.compile(rf"^(?:{_alternation('system')})(?:\.|…|\.\.\.)?$", re.I)
# The end of an iOS media placeholder: "image omitted", "Some file.txt \u200edocument omitted"; scripts
# written without spaces (Japanese, Chinese, Thai) glue the word to the noun ("画像省略"); some languages
# put the word first ("đã bỏ qua hình ảnh", "لم يتم إدراج الصورة", "ไม่มีรูปภาพ").
OMITTED = re.compile(
    rf"(?:(?:^|\s)(?:{_alternation('omitted', True)})|(?:{_alternation('omitted', False)}))\.?$"
    rf"|^(?:{_alternation('omitted_first')})",
    re.I,
)
# "<This message was edited>" after a text (iOS puts a left-to-right mark before it).
EDITED = re.compile(rf"\s*\u200e?<(?:{_alternation('edited')})\.?>\s*\Z", re.I)
# Android's "IMG-20240101-WA0001.jpg (file attached)" in each language: the words in the brackets.
_FILE_ATTACHED = [
    "file attached", "archivo adjunto", "arquivo anexado", "ficheiro anexado", "Datei angehängt", "fichier joint",
    "file allegato", "bestand bijgevoegd", "файл добавлен", "файл додано", "załączono plik", "plik załączony",
    "soubor připojen", "připojený soubor", "soubor byl přiložen", "dosya ekli", "ملف مرفق", "فایل پیوست شد", "फ़ाइल संलग्न है",
    "file terlampir", "แนบไฟล์", "tệp đính kèm", "ファイル添付あり", "已附加文件", "附件", "파일 첨부됨",
]  # fmt: skip
FILE_ATTACHED = re.compile("|".join(re.escape(nfc(w)) for w in _FILE_ATTACHED), re.I)
