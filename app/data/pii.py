"""Find personal data in text: emails, phone numbers, card numbers (Luhn), IBANs (mod 97),
IP addresses and a few national id patterns; and redact what was found."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

KINDS = ("email", "phone", "credit_card", "iban", "ip_address", "us_ssn", "uk_nino")
EMAIL_RE = re.compile(r"(?<![\w.+-])[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b")
CARD_RE = re.compile(r"(?<![\d-])\d(?:[ -]?\d){12,18}(?![\d-])")
IBAN_RE = re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}\b")
IPV4_RE = re.compile(r"(?<![\d.])\d{1,3}(?:\.\d{1,3}){3}(?![\d.])")
IPV6_RE = re.compile(r"(?<![\w:])[0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f]{0,4}){2,7}(?![\w:])")
# Social Security numbers exclude area 000, 666 and 9xx, group 00 and serial 0000.
SSN_RE = re.compile(r"\b(?!000|666|9\d\d)\d{3}-(?!00)\d{2}-(?!0000)\d{4}\b")
# UK National Insurance numbers: two letters (some never issued), six digits, A-D.
NINO_RE = re.compile(
    r"\b(?!BG|GB|NK|KN|TN|NT|ZZ)[A-CEGHJ-PR-TW-Z][A-CEGHJ-NPR-TW-Z] ?\d{2} ?\d{2} ?\d{2} ?[A-D]\b"
)
PHONE_REGION = "US"  # numbers written without a +country code are read as US numbers


@dataclass(frozen=True)
class Hit:
    kind: str
    text: str
    start: int
    end: int


def luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def iban_ok(text: str) -> bool:
    s = text.replace(" ", "").upper()
    if not 15 <= len(s) <= 34:
        return False
    moved = s[4:] + s[:4]
    return int("".join(str(int(c, 36)) for c in moved)) % 97 == 1


def _ip_ok(text: str) -> bool:
    if not any(c.isdigit() or c in "abcdefABCDEF" for c in text):
        return False
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _phones(text: str, taken: list[Hit]) -> list[Hit]:
    import phonenumbers

    out = []
    for m in phonenumbers.PhoneNumberMatcher(text, PHONE_REGION, leniency=phonenumbers.Leniency.VALID):
        if not any(h.start < m.end and m.start < h.end for h in taken):
            out.append(Hit("phone", m.raw_string, m.start, m.end))
    return out


def find_pii(text: str) -> list[Hit]:
    """Every piece of personal data in ``text``, in order; overlapping finds keep the first
    kind checked (a card number is not also reported as a phone number)."""
    hits: list[Hit] = []

    def add(kind: str, regex: re.Pattern, ok=lambda s: True) -> None:
        for m in regex.finditer(text):
            if ok(m.group()) and not any(h.start < m.end() and m.start() < h.end for h in hits):
                hits.append(Hit(kind, m.group(), m.start(), m.end()))

    add("email", EMAIL_RE)
    add("iban", IBAN_RE, iban_ok)
    add("credit_card", CARD_RE, lambda s: luhn_ok(re.sub(r"\D", "", s)))
    add("us_ssn", SSN_RE)
    add("uk_nino", NINO_RE)
    add("ip_address", IPV4_RE, _ip_ok)
    add("ip_address", IPV6_RE, _ip_ok)
    hits.extend(_phones(text, hits))
    return sorted(hits, key=lambda h: h.start)


def redact(text: str, hits: list[Hit] | None = None) -> str:
    """``text`` with each find replaced by its kind in brackets: "[EMAIL]"."""
    hits = find_pii(text) if hits is None else hits
    for h in sorted(hits, key=lambda h: h.start, reverse=True):
        text = text[:h.start] + f"[{h.kind.upper()}]" + text[h.end:]
    return text
