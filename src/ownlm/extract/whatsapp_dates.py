"""WhatsApp timestamps in every locale: the message-line pattern, digits, calendars and the date order.

A message line starts with a date and a time in the phone's short formats, in either order:

    27/03/2022, 21:41 - Ann: hi            date first (most locales; Android "-", iOS "[...]")
    [21:41:35, 3/27/22] Ann: hi            time first (some iOS settings)
    2565-03-27 21:41 - Ann: hi             Buddhist year (Thai calendar): 2565 - 543 = 2022
    R4/03/27 21:41 - Ann: hi               Japanese era (Reiwa 4 = 2022)
    [3/27/R4, 21:41:35] Ann: hi            Japanese era last (iOS, month first)
    [3/27/2565 BE, 21:41:35] Ann: hi       Buddhist year with its era's name (iOS)
    1401/01/07 21:41 - Ann: hi             Solar Hijri (Persian calendar): 7 Farvardin 1401 = 2022-03-27
    ١٣/٢/٢٠٢٤، ٦:٣٠ م - Ann: hi            Arabic-Indic digits, Arabic PM word

The date order (day/month/year, month/day/year, year/month/day, year/day/month, 2- or 4-digit year) is
read from the WHOLE file, separately per line style: each reading is scored by how many lines it makes
impossible (30 February) or out of time order (a chat runs forward), then by how many years fall outside
WhatsApp's life (2009 to a few years ahead). When two common readings (day-first, month-first) tie, the
choice is reported and ``--date-order`` settles it.

>>> m = match_header("[21:41:35, 3/27/22] Ann: hi")
>>> m["hh"], m["d1"], m["rest"]
('21', '3', 'Ann: hi')
>>> infer_order([match_header("27/03/22, 21:41 - A: x")])
('day-first', False, False)
"""

from __future__ import annotations

import re
from datetime import date, datetime

# Invisible marks exports put at line starts, before texts WhatsApp wrote and around phone numbers.
INVISIBLE = "\ufeff\u200b\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
STRIP_INVISIBLE = str.maketrans("", "", INVISIBLE)

# AM/PM words as locales write them after (or, in CJK locales, before) the time; dots and spaces are
# optional ("a. m.", "a.m.", "am"). English/Dutch/Hindi (am), Spanish/Portuguese (a. m.), German, Greek,
# Swedish, Afrikaans, Finnish, Hungarian, Vietnamese (SA/CH), Turkish (ÖÖ/ÖS), Arabic, Persian, Korean,
# Chinese, Japanese, Thai, Hindi, Czech, Ukrainian, Malay, Indonesian, Bengali, Tamil.
_AM = (
    r"a\.?\s?m\.? vorm\.? π\.?\s?μ\.? f\.?\s?m\.? vm\.? ap\.? de\. sa öö ص ق\.?ظ\.? 오전 上午 午前 ก่อนเที่ยง"
    r" पूर्वाह्न dop\. дп PG পূর্বাহ্ণ முற்பகல்"
).split()
_PM = (
    r"p\.?\s?m\.? nachm\.? μ\.?\s?μ\.? e\.?\s?m\.? nm\.? ip\.? du\. ch ös م ب\.?ظ\.? 오후 下午 午後 หลังเที่ยง"
    r" अपराह्न odp\. пп PTG অপরাহ্ণ பிற்பகல்"
).split()
_MARK = "|".join(_AM + _PM)
_AM_RE = re.compile("(?:" + "|".join(_AM) + r")\Z", re.I)

# Japanese eras as iOS/Android write them in short dates ("R4/03/27") or in full; year 1 of each era.
ERAS = {"R": 2019, "令和": 2019, "H": 1989, "平成": 1989, "S": 1926, "昭和": 1926}
_ERA = "|".join(sorted(ERAS, key=len, reverse=True))

# The era may also stand before a last-field year ("3/27/R4", iOS with month first); a Buddhist year may
# carry its era's name ("3/27/2565 BE").
_DATE = rf"""(?:(?P<era>{_ERA})\s?)?
    (?P<d1>\d{{1,4}})(?P<sep>[./-])\s?(?P<d2>\d{{1,2}})(?P=sep)\s?(?P<era3>{_ERA})?(?P<d3>\d{{1,4}})\.?
    (?:\s?(?P<be>BE|B\.E\.|พ\.ศ\.))?"""
_TIME = rf"""(?:(?P<pre>{_MARK})\s?)?
    (?P<hh>\d{{1,2}})[:.](?P<mm>\d{{2}})(?:[:.](?P<ss>\d{{2}}))?(?:\s?(?P<post>{_MARK}))?"""
_JOIN = r"(?:[,،]\s?|\s)(?:(?:à|kl\.|klo|um|às|alle|a\sla\(s\)|pukul)\s)?"  # "à" (fr), "klo" (fi), ...
HEADER = re.compile(  # date first
    rf"""^(?P<open>\[)?{_DATE}{_JOIN}{_TIME}
    (?(open)\]\s?|(?P<tail>\s[-–~]\s|(?(ss)(?::\s|\s)|(?!))))     # ] or -; with seconds ": " or " "
    (?P<rest>.*)$""",
    re.X | re.I,
)
HEADER_TIME_FIRST = re.compile(
    rf"""^(?P<open>\[)?{_TIME}(?:[,،]\s?|\s){_DATE}
    (?(open)\]\s?|(?P<tail>\s[-–~]\s))
    (?P<rest>.*)$""",
    re.X | re.I,
)

# Digits of every script count (Arabic-Indic, Persian, Devanagari, Bengali, Thai): ``int()`` reads them.
_HEADER_START = set("0123456789[٠١٢٣٤٥٦٧٨٩۰۱۲۳۴۵۶۷۸۹०१२३४५६७८९০১২৩৪৫৬৭৮৯๐๑๒๓๔๕๖๗๘๙RHS令平昭" + INVISIBLE)
_HAS_INVISIBLE = re.compile(f"[{INVISIBLE}]")
_MARK_IN_DATE = re.compile(rf"(?<=[\[\d/.،,:\s-])[{INVISIBLE}]+(?=[\d/.،,:\s-])")

ORDERS = ("day-first", "month-first", "year-first", "year-day-month")
_PRIOR = {"day-first": 0, "month-first": 1, "year-first": 2, "year-day-month": 3}
_COMMON = {"day-first", "month-first"}  # a tie between these is reported: both are everyday formats
FIRST_YEAR = 2009  # WhatsApp's first year: an earlier year means the date was read in the wrong order
LAST_YEAR = date.today().year + 5


def match_header(line: str) -> re.Match | None:
    """The timestamp pattern's match if ``line`` starts a message (invisible marks allowed), else None."""
    if line[:1] not in _HEADER_START:
        return None
    bare = line.lstrip(INVISIBLE)
    m = HEADER.match(bare) or HEADER_TIME_FIRST.match(bare)
    if m is None and _HAS_INVISIBLE.search(line, 0, 40):
        # Arabic: "١٣\u200f/٢\u200f/٢٠٢٤", "[\u200f27\u200f/3\u200f/2022، ...": drop the marks inside the
        # timestamp, keep those of the text
        bare = _MARK_IN_DATE.sub("", line[:40]).lstrip(INVISIBLE) + line[40:]
        m = HEADER.match(bare) or HEADER_TIME_FIRST.match(bare)
    return m


def style(m: re.Match) -> tuple:
    """Lines of one style share one date order; a file may mix styles (Android and iOS lines)."""
    tail = "]" if m["open"] else m["tail"].strip() or " "
    long3 = len(m["d3"]) > 2 or bool(m["era3"])  # the year is last
    return (tail, m["sep"], bool(m["era"]), len(m["d1"]) > 2, long3, m.re is HEADER)


def plausible(m: re.Match) -> bool:
    """The skeleton matched; the fields must also be able to form some date and time."""
    s1, s2, s3, hh, mm, ss = m.group("d1", "d2", "d3", "hh", "mm", "ss")
    if (m["era"] or m["era3"]) and (len(s1) > 2 or len(s3) > 2) or m["era"] and m["era3"]:
        return False
    if len(s1) > 2 and (len(s1) != 4 or len(s3) > 2) or len(s3) > 2 and len(s3) != 4:
        return False
    small = [int(s) for s in (s1, s2, s3) if len(s) <= 2]  # day, month and maybe a 2-digit year
    day_month = sorted(v for v in small if 1 <= v <= 31)
    return (
        len(day_month) >= 2
        and day_month[0] <= 12
        and (len(small) == 3 or len(day_month) == 2)
        and int(hh) <= 24
        and int(mm) <= 59
        and int(ss or 0) <= 59
    )


def possible_orders(st: tuple) -> tuple[str, ...]:
    """The readings a line style allows: a 4-digit (or era) first field is the year, and so on."""
    _, _, era, long1, long3, _ = st
    if era or long1:
        return ("year-first", "year-day-month")
    if long3:
        return ("day-first", "month-first")
    return ORDERS


SOLAR_HIJRI_YEARS = range(1300, 1500)  # 1921-2121: a 4-digit year here is Iranian (WhatsApp's life is 1387+)
_NOWRUZ_1400 = date(2021, 3, 21)  # 1 Farvardin 1400


def solar_hijri_leap(year: int) -> bool:
    """The 33-year rule, which matches Iran's astronomical calendar for the years 1178-1633.

    >>> [y for y in range(1395, 1405) if solar_hijri_leap(y)]
    [1395, 1399, 1403]
    """
    return (25 * year + 11) % 33 < 8


def solar_hijri_to_gregorian(year: int, month: int, day: int) -> tuple[int, int, int]:
    """A Solar Hijri date as (year, month, day) in the Gregorian calendar; ``ValueError`` for a day the
    month does not have (months 1-6 have 31 days, 7-11 have 30, Esfand 29 or 30 in a leap year).

    >>> solar_hijri_to_gregorian(1401, 1, 7), solar_hijri_to_gregorian(1402, 12, 29)
    ((2022, 3, 27), (2024, 3, 19))
    """
    length = 31 if month <= 6 else 30 if month <= 11 else 30 if solar_hijri_leap(year) else 29
    if not (1 <= month <= 12 and 1 <= day <= length):
        raise ValueError(f"{year}/{month}/{day} is not a Solar Hijri date")
    years = range(1400, year) if year >= 1400 else range(year, 1400)
    shift = sum(366 if solar_hijri_leap(y) else 365 for y in years) * (1 if year >= 1400 else -1)
    into = (month - 1) * 31 - max(0, month - 7) + day - 1  # days before this one in its year
    g = date.fromordinal(_NOWRUZ_1400.toordinal() + shift + into)
    return g.year, g.month, g.day


def _year(raw: str, value: int, era: str | None, buddhist: bool) -> int:
    if era:
        return ERAS[era.upper() if len(era) == 1 else era] + value - 1
    if len(raw) == 4:
        return value - 543 if value >= 2400 else value  # 2565 is a Buddhist year (Thai calendar)
    return (1957 if buddhist else 2000) + value  # "65" in a Thai short date is 2565, i.e. 2022


def ymd(m: re.Match, order: str, buddhist: bool = False) -> tuple[int, int, int]:
    """(year, month, day) of a match read in ``order``, in the Gregorian calendar (Buddhist, Japanese-era and
    Solar Hijri years converted). Only Solar Hijri dates are checked here (``ValueError``), the others by the
    caller."""
    s1, s2, s3 = m.group("d1", "d2", "d3")
    d1, d2, d3 = int(s1), int(s2), int(s3)
    if order == "year-first":
        y, mo, d = _year(s1, d1, m["era"], buddhist), d2, d3
    elif order == "year-day-month":
        y, mo, d = _year(s1, d1, m["era"], buddhist), d3, d2
    else:
        y = _year(s3, d3, m["era3"], buddhist)
        mo, d = (d2, d1) if order == "day-first" else (d1, d2)
    if y in SOLAR_HIJRI_YEARS and not (m["era"] or m["era3"]):  # Persian: checked (ValueError), converted
        return solar_hijri_to_gregorian(y, mo, d)
    return y, mo, d


def hms(m: re.Match) -> tuple[int, int, int]:
    hh, mm, ss, pre, post = m.group("hh", "mm", "ss", "pre", "post")
    h, mi, s = int(hh), int(mm), int(ss or 0)
    marker = pre or post
    if marker:
        am = bool(_AM_RE.match(marker))
        if am and h == 12:
            h = 0
        elif not am and h < 12:
            h += 12
    return h, mi, s


def iso(m: re.Match, order: str, buddhist: bool = False) -> str:
    """``YYYY-MM-DDTHH:MM:SS``; raises ``ValueError`` for an impossible date such as 30/02."""
    return datetime(*ymd(m, order, buddhist), *hms(m)).isoformat()


def _score(matches: list[re.Match], times: list[tuple], order: str, buddhist: bool) -> tuple[int, int, int]:
    """(lines this reading makes impossible or out of time order, years outside WhatsApp's life, years
    spanned: a chat of ten days read as 2009, 2011, 2013 puts the year in the wrong field)."""
    bad = odd = 0
    last = None
    years = set()
    for m, t in zip(matches, times):
        try:
            y, mo, d = ymd(m, order, buddhist)
            date(y, mo, d)
        except ValueError:
            bad += 1
            continue
        odd += not FIRST_YEAR <= y <= LAST_YEAR
        years.add(y)
        key = (y, mo, d, t)
        bad += last is not None and key < last
        last = key
    return bad, odd, max(years) - min(years) if years else 0


def infer_order(matches: list[re.Match], forced: str | None = None) -> tuple[str, bool, bool]:
    """``(order, buddhist, ambiguous)`` for the lines of one style.

    ``forced`` (``--date-order``) wins where the style allows it. ``buddhist`` is for 2-digit Thai
    years; ``ambiguous`` means two everyday readings fit the lines equally well.
    """
    st = style(matches[0])
    orders = possible_orders(st)
    if forced in orders:
        orders = (forced,)
    times = [hms(m) for m in matches]
    # best first: fewest contradictions, fewest odd years, the everyday order
    scored = sorted((_score(matches, times, o, False), _PRIOR[o], o) for o in orders)
    buddhist = False
    if scored[0][0][1] and not any(st[2:5]):  # odd years: try Thai 2-digit years
        thai = sorted((_score(matches, times, o, True), _PRIOR[o], o) for o in orders)
        if thai[0][0] < scored[0][0]:
            scored, buddhist = thai, True
    best = scored[0][0]
    tied = {o for s, _, o in scored if s == best}
    ambiguous = len(tied & _COMMON) > 1 and _differ(matches, "day-first", "month-first")
    return scored[0][2], buddhist, ambiguous


def _differ(matches: list[re.Match], a: str, b: str) -> bool:
    """Whether two readings give a different date for some line (3/3/24 is the same either way)."""

    def reading(m, order):
        try:
            return ymd(m, order)
        except ValueError:
            return None

    return any(reading(m, a) != reading(m, b) for m in matches)
