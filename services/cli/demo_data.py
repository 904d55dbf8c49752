"""The simulated population of `herald demo`: devices, users and permission states.

Everything here is a pure function of (count, seed), so a re-run with the same seed
registers the same device ids with the same tokens (nothing changes but the Web Push
subscriptions, which the sandbox hands out afresh) and the same users. The mix is what
a real consumer app sees: mostly authorised phones, some iOS devices on provisional
(quiet) authorisation, Android 13+ devices whose user never granted POST_NOTIFICATIONS
(background only), iOS devices that turned notifications off, and browsers that
refused the prompt. Only FOREGROUND devices are "push enabled for this app".
"""

from __future__ import annotations

import random
import string
from dataclasses import dataclass
from typing import Any

DEVICE_PREFIX = "demo-"
USER_PREFIX = "demo-user-"
TITLE = "Herald demo"
BODY = "Hi {{ first_name | default: 'there' }}, news from {{ city }}"
# Share of devices per platform, and of users per device (some users have two devices).
PLATFORM_SHARES = (("ios", 0.40), ("android", 0.35), ("web", 0.25))
USERS_PER_DEVICE = 0.8
NAMELESS_USERS = 0.1  # users without a first name: the template's default shows

CITIES = (
    ("Lisbon", "Europe/Lisbon", "pt-PT"),
    ("Paris", "Europe/Paris", "fr-FR"),
    ("Berlin", "Europe/Berlin", "de-DE"),
    ("Madrid", "Europe/Madrid", "es-ES"),
    ("London", "Europe/London", "en-GB"),
    ("New York", "America/New_York", "en-US"),
    ("São Paulo", "America/Sao_Paulo", "pt-BR"),
    ("Nairobi", "Africa/Nairobi", "en-KE"),
    ("Tokyo", "Asia/Tokyo", "ja-JP"),
    ("Sydney", "Australia/Sydney", "en-AU"),
)
FIRST_NAMES = (
    "Ana", "João", "Amélie", "Louis", "Lena", "Jonas", "Lucía", "Mateo", "Olivia", "Noah",
    "Sofía", "Liam", "Wanjiru", "Kofi", "Yui", "Haruto", "Chloé", "Zoë", "Ines", "Omar",
)  # fmt: skip
_FCM_ALPHABET = string.ascii_letters + string.digits + "-_"


@dataclass(frozen=True)
class SimUser:
    external_id: str
    first_name: str  # "" for a user who never told the app
    city: str
    time_zone: str
    locale: str
    age: int

    def attributes(self) -> dict[str, Any]:
        attributes: dict[str, Any] = {"city": self.city, "age": self.age}
        if self.first_name:
            attributes["first_name"] = self.first_name
        return attributes

    def greeting(self) -> str:
        """What the campaign's body renders to for this user."""
        return f"Hi {self.first_name or 'there'}, news from {self.city}"


@dataclass(frozen=True)
class SimDevice:
    device_id: str
    platform: str  # ios | android | web
    os_version: str
    authorization: str  # "" (platform default) | authorized | provisional | denied | not-determined
    state: str  # what the demo shows: authorized, provisional, background-only, no-permission
    user: SimUser
    token: str  # APNs hex or FCM token; "" for Web (a subscription is made at run time)
    wants_subscription: bool  # Web: the user accepted the prompt

    @property
    def push_enabled(self) -> bool:
        """FOREGROUND capability (docs/registration.md, permission rules)."""
        return self.state == "authorized"


def _fcm_token(rng: random.Random) -> str:
    # The shape of real registration tokens: an instance id, ":APA91b", a long tail.
    head = "".join(rng.choices(_FCM_ALPHABET, k=22))
    tail = "".join(rng.choices(_FCM_ALPHABET, k=134))
    return f"{head}:APA91b{tail}"


def _pick(rng: random.Random, weighted: tuple[tuple[str, float], ...]) -> str:
    return rng.choices([name for name, _ in weighted], [share for _, share in weighted])[0]


def users(count: int, seed: int) -> list[SimUser]:
    rng = random.Random(f"users:{seed}")
    out = []
    for index in range(max(1, round(count * USERS_PER_DEVICE))):
        city, zone, locale = rng.choice(CITIES)
        name = "" if rng.random() < NAMELESS_USERS else rng.choice(FIRST_NAMES)
        out.append(
            SimUser(f"{USER_PREFIX}{index:05d}", name, city, zone, locale, rng.randint(18, 80))
        )
    return out


def devices(count: int, seed: int) -> list[SimDevice]:
    """`count` devices; device i belongs to user i (wrapping), so a fifth of the users
    have a second device, often on another platform."""
    people = users(count, seed)
    rng = random.Random(f"devices:{seed}")
    out = []
    for index in range(count):
        user = people[index % len(people)]
        platform = _pick(rng, PLATFORM_SHARES)
        device_id = f"{DEVICE_PREFIX}{platform}-{index:05d}"
        if platform == "ios":
            auth = _pick(
                rng,
                (
                    ("authorized", 0.80),
                    ("provisional", 0.10),
                    ("denied", 0.06),
                    ("not-determined", 0.04),
                ),
            )
            state = {
                "authorized": "authorized",
                "provisional": "provisional",
                "denied": "background-only",
                "not-determined": "no-permission",
            }[auth]
            token = "" if auth == "not-determined" else rng.randbytes(32).hex()
            out.append(
                SimDevice(
                    device_id,
                    platform,
                    rng.choice(("16.7", "17.4", "17.5", "18.1")),
                    auth,
                    state,
                    user,
                    token,
                    False,
                )
            )
        elif platform == "android":
            version = rng.choice(("11", "12", "13", "14", "14", "15"))
            if int(version) <= 12:
                # No runtime prompt: authorised by default, unless turned off in settings.
                auth = "denied" if rng.random() < 0.05 else ""
            else:
                auth = "authorized" if rng.random() < 0.75 else "not-determined"
            state = "background-only" if auth in ("denied", "not-determined") else "authorized"
            out.append(
                SimDevice(device_id, platform, version, auth, state, user, _fcm_token(rng), False)
            )
        else:
            accepted = rng.random() < 0.92
            out.append(
                SimDevice(
                    device_id,
                    platform,
                    rng.choice(("Chrome 126", "Firefox 128", "Edge 126", "Safari 17.5")),
                    "authorized" if accepted else "denied",
                    "authorized" if accepted else "no-permission",
                    user,
                    "",
                    accepted,
                )
            )
    return out
