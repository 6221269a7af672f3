"""The refusals a reader meets on the public pages, in their language: each domain error carries an English
msgid and its parameters, translated and filled in when the page is shown (en, ru, kk), the form kept as
typed and nothing stored; the API and the CLI keep the English sentence."""

from __future__ import annotations

import html
import json
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from newsletter import i18n
from newsletter.addresses import InvalidEmail, normalise_email
from newsletter.config import Settings
from newsletter.models import MailingList, Subscriber
from newsletter.tokens import TokenPurpose
from newsletter.web.throttle import LocalThrottle
from tests.apiclient import Api, api_client
from tests.factories import make_list, make_subscriber, subscription_of
from tests.test_web_public import Web
from tests.test_web_public import web as web_app

site = pytest.fixture(name="site")(web_app.__wrapped__)  # type: ignore[attr-defined]

LANGUAGES = ("en", "ru", "kk")
EMAIL_HEADING = {"en": "Please check your email address:", "ru": "Проверьте адрес электронной почты:",
                 "kk": "Электрондық пошта мекенжайын тексеріңіз:"}  # fmt: skip
FORM_HEADING = {"en": "Please check the form:", "ru": "Проверьте форму:", "kk": "Форманы тексеріңіз:"}
LOOKALIKE = "dana@ex\u0430mple.org"  # a Cyrillic "а" in a Latin domain
# (what the form sends, whose heading, what the reader reads in en, ru, kk)
REFUSALS: dict[str, tuple[dict[str, str], dict[str, str], tuple[str, str, str]]] = {
    "no @-sign": ({"email": "dana.example.org", "attr.city": "Almaty"}, EMAIL_HEADING, (
        "an email address needs an @-sign, as in name@example.org",
        "в адресе электронной почты должен быть знак @, например name@example.org",
        "электрондық пошта мекенжайында @ белгісі болуы керек, мысалы: name@example.org")),
    "blank": ({"email": "  ", "attr.city": "Almaty"}, EMAIL_HEADING, (
        "please type your email address", "введите адрес электронной почты",
        "электрондық пошта мекенжайыңызды енгізіңіз")),
    "no domain": ({"email": "dana@", "attr.city": "Almaty"}, EMAIL_HEADING, (
        "there must be something after the @-sign", "после знака @ ничего не указано",
        "@ белгісінен кейін ештеңе жазылмаған")),
    "reserved domain": ({"email": "dana@example.invalid", "attr.city": "Almaty"}, EMAIL_HEADING, (
        "the part after the @-sign is a reserved name that cannot receive email",
        "часть после знака @ — зарезервированное имя, на которое нельзя получать почту",
        "@ белгісінен кейінгі бөлік — хат қабылдай алмайтын резервтелген атау")),
    "lookalike letters": ({"email": LOOKALIKE, "attr.city": "Almaty"}, EMAIL_HEADING, (
        "“ex\u0430mple” mixes letters of different alphabets, which is how addresses imitate others; "
        "please check the address",
        "в «ex\u0430mple» смешаны буквы разных алфавитов — так подделывают чужие адреса; проверьте адрес",
        "«ex\u0430mple» ішінде әртүрлі әліпбидің әріптері араласқан — бөтен мекенжайларды осылай қолдан "
        "жасайды; мекенжайды тексеріңіз")),
    "long local part": ({"email": "d" * 65 + "@example.org", "attr.city": "Almaty"}, EMAIL_HEADING, (
        "the part before the @-sign is longer than 64 characters", "часть до знака @ длиннее 64 символов",
        "@ белгісіне дейінгі бөлік 64 таңбадан ұзын")),
    "missing field": ({"email": "dana@example.org"}, FORM_HEADING, (
        "please also fill in: Your city", "заполните также: Your city", "мына өрістерді де толтырыңыз: Your city")),
    "NUL in the name": ({"email": "dana@example.org", "name": "Da\x00na", "attr.city": "Almaty"}, FORM_HEADING, (
        "the name contains a character that cannot be stored (NUL); please type it again",
        "в имени есть символ, который нельзя сохранить (NUL); введите имя заново",
        "атыңызда сақтауға болмайтын таңба (NUL) бар; атыңызды қайта енгізіңіз")),
    "NUL in a field": ({"email": "dana@example.org", "attr.city": "Alma\x00ty"}, FORM_HEADING, (
        "city: contains a NUL character", "city: содержит недопустимый символ NUL",
        "city: рұқсат етілмеген NUL таңбасы бар")),
    "unknown language": ({"email": "dana@example.org", "attr.city": "Almaty", "language": "tlh"}, FORM_HEADING, (
        "language must be one of en, kk, ru, got 'tlh'", "язык должен быть одним из: en, kk, ru, а указан 'tlh'",
        "тіл мыналардың бірі болуы керек: en, kk, ru, ал берілгені: 'tlh'")),
    "too many fields": ({**{f"f{n}": "x" for n in range(300)}, "email": "dana@example.org"}, FORM_HEADING, (
        "the form sent more than it holds; please reload the page and try again",
        "форма отправила больше данных, чем в ней может быть; обновите страницу и попробуйте ещё раз",
        "форма өзіне сыятыннан көп дерек жіберді; бетті қайта жүктеп, әрекетті қайталаңыз")),
}  # fmt: skip


@pytest.fixture
def courier(site: Web, session: Session) -> Iterator[MailingList]:
    mailing_list = make_list(session, slug="steppe", name="Steppe Courier")
    mailing_list.form_fields = [{"name": "city", "label": "Your city", "required": True}]
    session.commit()
    yield mailing_list


def _subscribers(session: Session) -> int:
    session.expire_all()
    return session.scalar(select(func.count()).select_from(Subscriber)) or 0


@pytest.mark.parametrize("case", REFUSALS)
def test_each_subscribe_refusal_in_the_readers_language(
    case: str, site: Web, session: Session, courier: MailingList
) -> None:
    data, heading, said = REFUSALS[case]
    for language, expected in zip(LANGUAGES, said, strict=True):
        page = site.client.post("/subscribe/steppe", data=data, headers={"Accept-Language": language})
        assert page.status_code == 400 and f'<html lang="{language}"' in page.text
        shown = html.unescape(page.text)
        assert f"<strong>{heading[language]}</strong> {expected}</p>" in shown, shown
        if case != "too many fields":
            assert f'value="{html.escape(data["email"])}"' in page.text  # the form as it was typed
        # the JSON of the embeddable form says the same to the page that shows it
        answer = site.client.post(
            "/subscribe/steppe", data=data, headers={"Accept-Language": language, "Accept": "application/json"}
        )
        assert answer.status_code == 400 and answer.json()["error"] == expected
    assert _subscribers(session) == 0 and site.mailer.sent == []


def test_the_field_of_a_refusal_is_machine_readable(site: Web, courier: MailingList) -> None:
    fields = {}
    for case in ("no @-sign", "missing field", "NUL in the name", "unknown language", "too many fields"):
        answer = site.client.post("/subscribe/steppe", data=REFUSALS[case][0], headers={"Accept": "application/json"})
        fields[case] = answer.json()["field"]
    assert fields == {"no @-sign": "email", "missing field": "attributes", "NUL in the name": "name",
                      "unknown language": "language", "too many fields": "form"}  # fmt: skip
    not_json = site.client.post("/subscribe/steppe", content=b"{oops", headers={"Content-Type": "application/json"})
    assert not_json.status_code == 400 and not_json.json()["field"] == "form"


def test_a_rate_limited_reader_is_told_in_their_language(site: Web, session: Session, courier: MailingList) -> None:
    site.app.state.subscribe_throttle = LocalThrottle(0, 3600)
    said = {"en": "Too many attempts from your network. Please try again in an hour.",
            "ru": "Слишком много попыток из вашей сети. Попробуйте снова через час.",
            "kk": "Желіңізден тым көп әрекет жасалды. Бір сағаттан кейін қайталап көріңіз."}  # fmt: skip
    for language in LANGUAGES:
        data = {"email": f"{language}@example.org", "attr.city": "Almaty"}
        page = site.client.post("/subscribe/steppe", data=data, headers={"Accept-Language": language})
        assert page.status_code == 429 and said[language] in page.text and page.headers["retry-after"] == "3600"
    assert _subscribers(session) == 0


def test_a_bad_link_is_refused_in_the_readers_language(site: Web, courier: MailingList) -> None:
    said = {"en": "This link is not valid", "ru": "Эта ссылка недействительна", "kk": "Бұл сілтеме жарамсыз"}
    for language in LANGUAGES:
        for path in ("/confirm/forged", "/unsubscribe/forged", "/preferences/forged"):
            page = site.client.get(path, headers={"Accept-Language": language})
            assert page.status_code == 404 and said[language] in page.text, (language, path)


def test_an_expired_confirmation_link_is_explained_in_the_readers_language(
    site: Web, session: Session, courier: MailingList, monkeypatch: pytest.MonkeyPatch
) -> None:
    from itsdangerous import TimestampSigner

    waiting = make_subscriber(session, courier, "late@example.org", confirmed=False)
    session.commit()
    signed = int(time.time()) - 8 * 24 * 3600  # the link of an email opened eight days later
    monkeypatch.setattr(TimestampSigner, "get_timestamp", lambda _signer: signed)
    token = site.tokens.make(TokenPurpose.confirm, waiting.id, courier.id, bound_to=waiting.created_at)
    monkeypatch.undo()
    said = {"en": "This confirmation link has expired", "ru": "Срок действия ссылки для подтверждения истёк",
            "kk": "Бұл растау сілтемесінің мерзімі өтті"}  # fmt: skip
    for language in LANGUAGES:
        page = site.client.get(f"/confirm/{token}", headers={"Accept-Language": language})
        assert page.status_code == 410 and said[language] in page.text and f'lang="{language}"' in page.text
    session.expire_all()
    assert subscription_of(session, waiting, courier).status == "pending"


PREFERENCE_REFUSALS = {
    "en": ("Nothing was saved: language must be one of en, kk, ru, got 'xx'",
           "Nothing was saved: the form sent more than it holds; please reload the page and try again"),
    "ru": ("Ничего не сохранено: язык должен быть одним из: en, kk, ru, а указан 'xx'",
           "Ничего не сохранено: форма отправила больше данных, чем в ней может быть; обновите страницу и "
           "попробуйте ещё раз"),
    "kk": ("Ештеңе сақталмады: тіл мыналардың бірі болуы керек: en, kk, ru, ал берілгені: 'xx'",
           "Ештеңе сақталмады: форма өзіне сыятыннан көп дерек жіберді; бетті қайта жүктеп, әрекетті қайталаңыз"),
}  # fmt: skip


@pytest.mark.parametrize("language", LANGUAGES)
def test_a_refused_preferences_form_says_why_in_the_readers_language_and_changes_nothing(
    language: str, site: Web, session: Session, courier: MailingList
) -> None:
    reader = make_subscriber(session, courier, "aigerim@example.org", "Aigerim")
    reader.language = language
    session.commit()
    token = site.tokens.make(TokenPurpose.preferences, reader.id, bound_to=reader.created_at)
    bad_language = {"name": "Changed", "list": str(courier.id), "language": "xx"}
    # more fields than any form of ours: read as no list checked, it would have unsubscribed her from all
    flood = [("name", "Changed"), *((f"section.{n}", "x") for n in range(300))]
    for data, expected in zip((bad_language, flood), PREFERENCE_REFUSALS[language], strict=True):
        form = {"Content-Type": "application/x-www-form-urlencoded"}
        page = site.client.post(f"/preferences/{token}", content=urlencode(data), headers=form)
        assert page.status_code == 400 and f'<html lang="{language}"' in page.text
        assert expected in html.unescape(page.text)
        session.expire_all()
        kept = session.get(Subscriber, reader.id)
        assert kept is not None and (kept.name, kept.language) == ("Aigerim", language)
        assert subscription_of(session, kept, courier).status == "confirmed"


def test_errors_translate_at_render_time_and_survive_pickling() -> None:
    import pickle

    with pytest.raises(InvalidEmail) as caught:
        normalise_email(LOOKALIKE)
    error = pickle.loads(pickle.dumps(caught.value))  # noqa: S301 - our own object
    # English for the API and the CLI: the precise sentence, naming the alphabets
    assert str(error) == "'ex\u0430mple' mixes Cyrillic and Latin letters, which is how addresses imitate " \
        "others; please check the address"  # fmt: skip
    assert error.translated(i18n.translations("ru").gettext).startswith("в «ex\u0430mple» смешаны буквы")
    with pytest.raises(InvalidEmail) as library:
        normalise_email("dana@localhost")
    assert str(library.value) == "The part after the @-sign is not valid. It should have a period."
    assert library.value.translated(i18n.translations("en").gettext) == (
        "the part after the @-sign needs a period, as in example.org"
    )


@pytest.fixture
def api(settings: Settings, sessions: sessionmaker[Session]) -> Iterator[Api]:
    with api_client(settings, sessions) as client:
        yield client


def test_the_api_keeps_its_errors_in_english(api: Api) -> None:
    with api.sessions.begin() as session:
        make_list(session, slug="steppe")
    answers: list[Any] = [
        api.call("POST", "/api/v1/subscribers", json={"email": email}, headers={"Accept-Language": "ru"})
        for email in ("dana.example.org", LOOKALIKE)
    ]
    bodies = [json.dumps(answer.json()) for answer in answers]
    assert [answer.status_code for answer in answers] == [422, 422]
    assert "An email address must have an @-sign." in bodies[0] and "mixes Cyrillic and Latin letters" in bodies[1]
    assert not any(ch in "".join(bodies) for ch in "вдлжн")  # no Russian word
