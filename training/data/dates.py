"""Dates written many ways -> ISO 8601: a generated, seeded translation task for seq2seq models.

``load_dates(seed)`` draws calendar dates between ``START`` and ``END`` and writes each in one of
:data:`FORMATS` (``3 March 2021``, ``March 3rd, 2021``, ``03.03.2021``, ``3/3/2021``, ...); the
target is always ``2021-03-03``. Nothing downloads and the same seed gives the same pairs.

Held-out means held-out *dates*: the calendar days are shuffled and partitioned first, so no test
or validation date appears in training in any format. Test and validation pairs cycle through the
formats (each format gets an equal share, so exact match can be reported per format); training
pairs draw their format at random.

Each template's numeric conventions are fixed so that no string is ambiguous: dots are day-first
(``DD.MM.YYYY``, European), slashes with a four-digit year *last* are month-first (``M/D/YYYY``,
US), slashes with the year first are ``YYYY/MM/DD``. English month and weekday names are written
out here rather than taken from the locale.

The vocabulary is shared by source and target (the target's characters are a subset): the special
tokens ``<pad>``, ``<bos>``, ``<eos>``, ``<unk>`` first, then every character the formats can write.
"""

from __future__ import annotations

import datetime as dt
import random
import re
from dataclasses import dataclass

import torch

START, END = dt.date(1950, 1, 1), dt.date(2049, 12, 31)
SPECIALS = ("<pad>", "<bos>", "<eos>", "<unk>")
PAD, BOS, EOS, UNK = range(4)
MAX_SOURCE_LEN = 32  # every format fits (the longest, "Wednesday, September 30, 2021", is 29)
TARGET_LEN = 10  # "YYYY-MM-DD"

MONTHS = (
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
)
WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")

# name -> template. Fields: {d} day, {dd} zero-padded day, {do} ordinal day (3rd), {m}/{mm} month,
# {B} month name, {b} its three-letter abbreviation, {BU} the abbreviation upper-case, {bl} the name
# lower-case, {A} weekday name, {a} its abbreviation, {Y} four-digit year.
FORMATS: dict[str, str] = {
    "D Month YYYY": "{d} {B} {Y}",  # 3 March 2021
    "Month Dth, YYYY": "{B} {do}, {Y}",  # March 3rd, 2021
    "Mon D YYYY": "{b} {d} {Y}",  # Mar 3 2021
    "DD-Mon-YYYY": "{dd}-{b}-{Y}",  # 03-Mar-2021
    "DD.MM.YYYY": "{dd}.{mm}.{Y}",  # 03.03.2021
    "YYYY/MM/DD": "{Y}/{mm}/{dd}",  # 2021/03/03
    "M/D/YYYY": "{m}/{d}/{Y}",  # 3/3/2021
    "Weekday, Month D, YYYY": "{A}, {B} {d}, {Y}",  # Wednesday, March 3, 2021
    "Wkd D Mon YYYY": "{a} {d} {b} {Y}",  # Wed 3 Mar 2021
    "YYYYMMDD": "{Y}{mm}{dd}",  # 20210303
    "D MON YYYY": "{d} {BU} {Y}",  # 3 MAR 2021
    "Month D, YYYY": "{B} {d}, {Y}",  # March 3, 2021
    "Dth of Month YYYY": "{do} of {B} {Y}",  # 3rd of March 2021
    "Mon. D, YYYY": "{b}. {d}, {Y}",  # Mar. 3, 2021
    "month d yyyy": "{bl} {d} {Y}",  # march 3 2021
    "YYYY-MM-DD": "{Y}-{mm}-{dd}",  # 2021-03-03 (already ISO: the model must copy it)
}


def ordinal(n: int) -> str:
    """1 -> 1st, 2 -> 2nd, 3 -> 3rd, 11 -> 11th, 22 -> 22nd."""
    suffix = "th" if 11 <= n % 100 <= 13 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def format_date(date: dt.date, fmt: str) -> str:
    """``date`` written in format ``fmt`` (a key of :data:`FORMATS`)."""
    month, weekday = MONTHS[date.month - 1], WEEKDAYS[date.weekday()]
    return FORMATS[fmt].format(
        d=date.day,
        dd=f"{date.day:02d}",
        do=ordinal(date.day),
        m=date.month,
        mm=f"{date.month:02d}",
        B=month,
        b=month[:3],
        BU=month[:3].upper(),
        bl=month.lower(),
        A=weekday,
        a=weekday[:3],
        Y=f"{date.year:04d}",
    )


def target(date: dt.date) -> str:
    return date.isoformat()  # YYYY-MM-DD


_FIELD_PATTERNS = {
    "d": r"(?P<d>\d{1,2})",
    "dd": r"(?P<d>\d{2})",
    "do": r"(?P<d>\d{1,2})(?:st|nd|rd|th)",
    "m": r"(?P<m>\d{1,2})",
    "mm": r"(?P<m>\d{2})",
    "Y": r"(?P<Y>\d{4})",
    "B": r"(?P<B>[A-Z][a-z]+)",
    "b": r"(?P<b>[A-Z][a-z]{2})",
    "BU": r"(?P<BU>[A-Z]{3})",
    "bl": r"(?P<bl>[a-z]+)",
    "A": r"(?P<A>[A-Z][a-z]+)",
    "a": r"(?P<a>[A-Z][a-z]{2})",
}


def parse_date(text: str, fmt: str) -> dt.date:
    """The inverse of :func:`format_date`, written independently of it (a regex per template).

    Raises ``ValueError`` if ``text`` is not in format ``fmt`` or names the wrong weekday.
    """
    pattern = re.sub(
        r"\\\{(\w+)\\\}", lambda m: _FIELD_PATTERNS[m.group(1)], re.escape(FORMATS[fmt])
    )
    match = re.fullmatch(pattern, text)
    if match is None:
        raise ValueError(f"{text!r} is not in format {fmt!r}")
    g = match.groupdict()
    if g.get("m"):
        month = int(g["m"])
    else:
        words = {
            "B": MONTHS,
            "b": [n[:3] for n in MONTHS],
            "BU": [n[:3].upper() for n in MONTHS],
            "bl": [n.lower() for n in MONTHS],
        }
        field = next(k for k in words if g.get(k))
        if g[field] not in words[field]:
            raise ValueError(f"{text!r}: unknown month {g[field]!r}")
        month = words[field].index(g[field]) + 1
    date = dt.date(int(g["Y"]), month, int(g["d"]))
    day_name = g.get("A") or g.get("a")
    if day_name and WEEKDAYS[date.weekday()][: len(day_name)] != day_name:
        raise ValueError(f"{text!r}: {date} is a {WEEKDAYS[date.weekday()]}")
    return date


@dataclass(frozen=True)
class Pairs:
    sources: list[str]
    targets: list[str]
    formats: list[str]

    def __len__(self) -> int:
        return len(self.sources)


@dataclass(frozen=True)
class DatesData:
    name: str  # "dates"
    source: str  # how the pairs were made
    train: Pairs
    val: Pairs
    test: Pairs
    tokens: list[str]  # shared vocabulary: SPECIALS, then characters

    def splits(self) -> dict[str, int]:
        return {"train": len(self.train), "val": len(self.val), "test": len(self.test)}

    def encode(self, texts: list[str], length: int, *, eos: bool = False) -> torch.Tensor:
        """int64 (len(texts), length): ids right-padded with ``<pad>`` (``eos`` appends
        ``<eos>``)."""
        return encode(texts, self.tokens, length, eos=eos)


def encode(texts: list[str], tokens: list[str], length: int, *, eos: bool = False) -> torch.Tensor:
    index = {t: i for i, t in enumerate(tokens)}
    out = torch.full((len(texts), length), PAD, dtype=torch.int64)
    for row, text in enumerate(texts):
        ids = [index.get(ch, UNK) for ch in text] + ([EOS] if eos else [])
        if len(ids) > length:
            raise ValueError(f"{text!r} needs {len(ids)} tokens; the model takes at most {length}")
        out[row, : len(ids)] = torch.tensor(ids, dtype=torch.int64)
    return out


def alphabet() -> set[str]:
    """Every character any format can write (a year of dates covers every month, weekday, digit)."""
    year = [dt.date(2021, 1, 1) + dt.timedelta(days=i) for i in range(365)]
    return {ch for d in year for f in FORMATS for ch in format_date(d, f) + target(d)}


def _pairs(dates: list[dt.date], n: int, rng: random.Random, cycle: bool) -> Pairs:
    names = list(FORMATS)
    chosen = [rng.choice(dates) for _ in range(n)]
    fmts = (
        [names[i % len(names)] for i in range(n)]
        if cycle
        else [rng.choice(names) for _ in range(n)]
    )
    return Pairs(
        [format_date(d, f) for d, f in zip(chosen, fmts)], [target(d) for d in chosen], fmts
    )


def load_dates(
    seed: int = 0,
    *,
    n_train: int = 40_000,
    n_val: int = 1_000,
    n_test: int = 2_000,
    held_out_days: int = 6_000,
) -> DatesData:
    """Seeded pairs; val and test dates (``held_out_days`` calendar days, half each) never train."""
    days = [START + dt.timedelta(days=i) for i in range((END - START).days + 1)]
    rng = random.Random(seed)
    rng.shuffle(days)
    half = held_out_days // 2
    val_days, test_days, train_days = days[:half], days[half : 2 * half], days[2 * half :]
    if not (val_days and test_days and train_days):
        raise ValueError("held_out_days leaves a split without dates")
    train = _pairs(train_days, n_train, rng, cycle=False)
    val = _pairs(val_days, n_val, rng, cycle=True)
    test = _pairs(test_days, n_test, rng, cycle=True)
    chars = sorted(alphabet())
    return DatesData(
        name="dates",
        source=f"generated: training.data.dates (seed {seed}, {START}..{END})",
        train=train,
        val=val,
        test=test,
        tokens=list(SPECIALS) + chars,
    )
