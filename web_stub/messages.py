# ruff: noqa: E501  (a catalogue of Japanese sentences: one per line reads best)
"""Every message the pages show, in the user's terms (the operator guide's wording where it has one)."""

from __future__ import annotations

import unicodedata

from core.phone import format_number

# Password rules (core.auth.password_rule_violations codes). Unknown codes fall back to a generic
# sentence that still lists the rules, so a new core rule never shows a bare code.
PASSWORD_RULE_MESSAGES: dict[str, str] = {
    "length": "パスワードは8桁～12桁で設定してください。",
    "too_short": "パスワードは8桁～12桁で設定してください。",
    "too_long": "パスワードは8桁～12桁で設定してください。",
    "charset": "パスワードは半角英数字（英字と数字）のみで設定してください。記号は使えません。",
    "invalid_characters": "パスワードは半角英数字（英字と数字）のみで設定してください。記号は使えません。",
    "not_alphanumeric": "パスワードは半角英数字（英字と数字）のみで設定してください。記号は使えません。",
    "letters_and_digits": "パスワードには英字と数字の両方を含めてください。英字のみ、数字のみの設定はできません。",
    "needs_letter_and_digit": "パスワードには英字と数字の両方を含めてください。英字のみ、数字のみの設定はできません。",
    "letters_only": "英字のみのパスワードは設定できません。英字と数字の両方を含めてください。",
    "digits_only": "数字のみのパスワードは設定できません。英字と数字の両方を含めてください。",
    "no_digit": "英字のみのパスワードは設定できません。数字も含めてください。",
    "no_letter": "数字のみのパスワードは設定できません。英字も含めてください。",
    "missing_digit": "英字のみのパスワードは設定できません。数字も含めてください。",
    "missing_letter": "数字のみのパスワードは設定できません。英字も含めてください。",
    "same_as_current": "現在のパスワードと同一のパスワードを新しいパスワードに設定することはできません。",
    "repeated": "0000、aaaa等の4文字以上の同一文字列を含むパスワードは設定できません。",
    "repeated_run": "0000、aaaa等の4文字以上の同一文字列を含むパスワードは設定できません。",
    "repeated_characters": "0000、aaaa等の4文字以上の同一文字列を含むパスワードは設定できません。",
    "sequence": "1234、abcd、4321、dcba等の昇順・降順の4文字以上の文字列を含むパスワードは設定できません。",
    "sequential": "1234、abcd、4321、dcba等の昇順・降順の4文字以上の文字列を含むパスワードは設定できません。",
    "sequential_run": "1234、abcd、4321、dcba等の昇順・降順の4文字以上の文字列を含むパスワードは設定できません。",
    "ascending_or_descending": "1234、abcd、4321、dcba等の昇順・降順の4文字以上の文字列を含むパスワードは設定できません。",
    "contains_phone_number": "お客様の電話番号を含むパスワードは設定できません。",
    "contains_number": "お客様の電話番号を含むパスワードは設定できません。",
    "phone_number": "お客様の電話番号を含むパスワードは設定できません。",
    "current_wrong": "現在のパスワードが正しくありません。",
    "mismatch": "新しいパスワードと確認のための再入力が一致しません。",
    "empty": "新しいパスワードを入力してください。",
}
PASSWORD_RULE_FALLBACK = (
    "このパスワードは設定できません。8桁～12桁の半角英数字（英字と数字の両方）で、"
    "同じ文字や連続する文字の4文字以上の並び、電話番号を含まないものを設定してください。"
)

CONFIRMATION_ID_MESSAGES: dict[str, str] = {
    "length": "確認用IDは8～12桁で登録してください。",
    "too_short": "確認用IDは8～12桁で登録してください。",
    "too_long": "確認用IDは8～12桁で登録してください。",
    "charset": "確認用IDは半角英数字のみで登録してください。",
    "invalid_characters": "確認用IDは半角英数字のみで登録してください。",
    "not_alphanumeric": "確認用IDは半角英数字のみで登録してください。",
    "digits_only": "数字のみの確認用IDは利用できません。",
    "upper_only": "英字大文字のみの確認用IDは利用できません。",
    "uppercase_only": "英字大文字のみの確認用IDは利用できません。",
    "lower_only": "英字小文字のみの確認用IDは利用できません。",
    "lowercase_only": "英字小文字のみの確認用IDは利用できません。",
    "mismatch": "確認用IDと確認用ID(再入力)が一致しません。",
    "current_wrong": "入力した変更前の確認用IDが誤っています。再度入力してください。",
    "same_as_current": "変更前と同じ確認用IDは登録できません。",
    "empty": "確認用IDを入力してください。",
}
CONFIRMATION_ID_FALLBACK = "確認用IDは「8～12桁の半角英数字」で、数字のみ・英字大文字のみ・英字小文字のみ以外の文字を登録してください。"

CONFIRMATION_PASSWORD_MESSAGES: dict[str, str] = {
    "length": "確認用パスワードは8～12桁で登録してください。",
    "too_short": "確認用パスワードは8～12桁で登録してください。",
    "too_long": "確認用パスワードは8～12桁で登録してください。",
    "charset": "確認用パスワードは半角英数字のみで登録してください。",
    "invalid_characters": "確認用パスワードは半角英数字のみで登録してください。",
    "not_alphanumeric": "確認用パスワードは半角英数字のみで登録してください。",
    "letters_and_digits": "確認用パスワードには英字と数字の両方を含めてください。",
    "needs_letter_and_digit": "確認用パスワードには英字と数字の両方を含めてください。",
    "letters_only": "確認用パスワードには英字と数字の両方を含めてください。",
    "digits_only": "確認用パスワードには英字と数字の両方を含めてください。",
    "no_digit": "確認用パスワードには英字と数字の両方を含めてください。",
    "no_letter": "確認用パスワードには英字と数字の両方を含めてください。",
    "missing_digit": "確認用パスワードには英字と数字の両方を含めてください。",
    "missing_letter": "確認用パスワードには英字と数字の両方を含めてください。",
    "mismatch": "確認用パスワードと確認用パスワード(再入力)が一致しません。",
    "current_wrong": "入力した変更前の確認用パスワードが誤っています。再度入力してください。",
    "same_as_current": "変更前と同じ確認用パスワードは登録できません。",
    "empty": "確認用パスワードを入力してください。",
}
CONFIRMATION_PASSWORD_FALLBACK = (
    "確認用パスワードは「8～12桁の半角英数字」で、英字と数字の両方を含めて登録してください。"
)


#: Codes that still say something true of a value typed in full-width characters; the others
#: (charset, letters and digits, runs) would only mislead next to the one 全角 message.
_STILL_TRUE_WHEN_FULL_WIDTH = {"length", "too_short", "too_long", "same_as_current", "mismatch", "empty"}


def has_full_width(value: str) -> bool:
    """Typed with a Japanese input method (全角): ａ１ etc., and the ideographic space."""
    return any(unicodedata.east_asian_width(c) in ("F", "W") for c in value)


def full_width_message(what: str) -> str:
    return f"{what}に全角文字が含まれています。{what}は半角英数字で入力してください（入力モードを半角英数に切り替えてください）。"


def _full_width_first(
    codes: list[str], value: str, what: str, table: dict[str, str], fallback: str
) -> list[str]:
    if not value or not has_full_width(value):
        return _messages(codes, table, fallback)
    kept = [c for c in codes if c in _STILL_TRUE_WHEN_FULL_WIDTH]
    return [full_width_message(what), *_messages(kept, table, fallback)]


def _messages(codes: list[str], table: dict[str, str], fallback: str) -> list[str]:
    out: list[str] = []
    for code in codes:
        text = table.get(code, fallback)
        if text not in out:
            out.append(text)
    return out


def password_messages(codes: list[str], new_password: str = "") -> list[str]:
    """Messages for the rules broken; "letters and digits" says which of the two is missing."""
    refined: list[str] = []
    for code in codes:
        if code == "letters_and_digits" and new_password:
            has_digit = any(c.isascii() and c.isdigit() for c in new_password)
            has_letter = any(c.isascii() and c.isalpha() for c in new_password)
            if has_letter and not has_digit:
                code = "letters_only"
            elif has_digit and not has_letter:
                code = "digits_only"
        refined.append(code)
    return _full_width_first(
        refined, new_password, "パスワード", PASSWORD_RULE_MESSAGES, PASSWORD_RULE_FALLBACK
    )


def confirmation_id_messages(codes: list[str], value: str = "") -> list[str]:
    return _full_width_first(codes, value, "確認用ID", CONFIRMATION_ID_MESSAGES, CONFIRMATION_ID_FALLBACK)


def confirmation_password_messages(codes: list[str], value: str = "") -> list[str]:
    return _full_width_first(
        codes, value, "確認用パスワード", CONFIRMATION_PASSWORD_MESSAGES, CONFIRMATION_PASSWORD_FALLBACK
    )


def phone_instructions(service_number: str) -> str:
    return (
        f"契約回線から仮パスワード設定番号 {format_number(service_number)} にトーン（プッシュ）信号で"
        f"お電話いただき、仮パスワードを設定してください。"
    )


WRONG_CREDENTIALS = "電話番号またはパスワードが正しくありません。"


def invalidated_message(
    service_number: str, *, temporary: bool | None, temporary_tries: int = 3, permanent_tries: int = 10
) -> str:
    """A password that no longer opens the site: which one (temporary or not), after how many wrong
    tries in a row (the policy's 3 / 10), and what to do (call the temporary-password number from the
    contract line). ``temporary=None``: the page cannot tell which, so both are named."""
    if temporary is None:
        why = (
            f"パスワードの入力を連続して{permanent_tries}回（仮パスワードの場合は{temporary_tries}回）誤ったため、"
            "パスワード（仮パスワード）は無効になりました。"
        )
    elif temporary:
        why = f"仮パスワードの入力を連続して{temporary_tries}回誤ったため、仮パスワードは無効になりました。"
    else:
        why = f"パスワードの入力を連続して{permanent_tries}回誤ったため、パスワードは無効になりました。"
    return why + "このままではログインできません。" + phone_instructions(service_number)


def temporary_expired_message(service_number: str) -> str:
    return "仮パスワードの有効期限（設定から24時間）が切れています。" + phone_instructions(service_number)


IDLE_LOGGED_OUT = "一定時間操作がなかったため、自動的にログアウトしました。もう一度ログインしてください。"
FORM_EXPIRED = "画面の有効期限が切れました。もう一度操作してください。"
MAIL_FAILED = (
    "メールを送信できませんでした。しばらく時間をおいてから、もう一度お試しください。"
    "繰り返し失敗する場合は、メールアドレスをご確認ください。"
)
EMAIL_INVALID = "メールアドレスの形式が正しくありません。例) abc@def.co.jp"
EMAIL_MISMATCH = "メールアドレスとメールアドレス(再入力)が一致しません。"
CODE_WRONG = (
    "ワンタイムパスワードが正しくありません。メールに記載されたワンタイムパスワードを入力してください。"
)
CODE_EXPIRED = (
    "ワンタイムパスワードの有効時間（300秒）を過ぎたか、すでに使用されています。"
    "「ワンタイムパスワード送信確認画面へ」から新しいワンタイムパスワードを送信するか、再度ログインしてください。"
)
CODE_TOO_MANY = (
    "ワンタイムパスワードの入力を規定の回数続けて誤ったため、このログインは無効になりました。"
    "お手数ですが、もう一度ログインからやり直してください。"
)


def code_unavailable(reason: str) -> str:
    if reason == "too_many_codes":
        return (
            "ワンタイムパスワードの送信回数が上限に達しました。"
            "お手数ですが、もう一度ログインからやり直してください。"
        )
    if reason == "too_many_mails":
        return "ワンタイムパスワードのメールの送信回数が上限に達しました。しばらくたってから、もう一度お試しください。"
    if reason == "not_registered":
        return "ワンタイムパスワード受信用メールアドレスが登録されていません。もう一度ログインしてください。"
    return "このログインの手続きは終了しています。お手数ですが、もう一度ログインからやり直してください。"


CODE_NONE = "ワンタイムパスワードがまだ送信されていません。「ワンタイムパスワードを送信」を押してください。"
LINK_EXPIRED = (
    "メールアドレスの本登録お手続きURLの有効期限（24時間）が切れています。"
    "再度ひかり電話設定サイトにログインしてお手続きをお願いします。"
)
LINK_USED = "このURLはすでに使用されています。本登録が完了している場合は、そのままログインしてください。"
LINK_UNKNOWN = "このURLは無効です。メールに記載されたURLを、途中で切れないようにすべて開いてください。"
BULK_NOTHING_CHANGED = "エラーがあったため、いずれの電話番号のパスワードも変更していません。"
BULK_NOTHING_SET = "エラーがあったため、いずれの電話番号も設定していません。"
RELEASE_PASSWORD_EMPTY = "現在のパスワードを入力してください。"


def release_password_wrong(tries: int) -> str:
    return f"パスワードが正しくありません。パスワードの入力を連続して{tries}回誤ると、パスワードは無効になります。"


RELEASE_NOTHING = "ワンタイムパスワードの登録がある電話番号はありません。"
CONFIRMATION_WRONG = "確認用IDまたは確認用パスワードが正しくありません。"
SYSTEM_ERROR = "ただいまシステムが混み合っているか、障害が発生しています。しばらく時間をおいてから、もう一度お試しください。"


def unit_change_notes(old_unit: str, new_unit: str) -> list[str]:
    """What changes for the customer (the operator guide P14–P21): which number to log in with, which password."""
    notes = []
    if new_unit == "line":
        notes.append(
            "※認証単位を変更した後のログイン時に入力する電話番号は「お客様電話番号」（契約電話番号）になります。"
        )
    elif new_unit == "number":
        notes.append(
            "※認証単位を変更した後のログイン時に入力する電話番号は、設定したい付加サービスをご契約されている電話番号になります。"
        )
    else:
        notes.append(
            "※認証単位を変更した後は、すべての電話番号を設定する場合は「お客様電話番号」で、"
            "電話番号ごとに設定する場合はその電話番号でログインしてください。"
        )
    if old_unit == "line":
        notes.append(
            "※認証単位を変更した後のパスワードは、契約電話番号、追加番号ともに現在ご利用中のパスワードが有効となります。"
        )
    elif new_unit == "line":
        notes.append("※認証単位を変更した後のパスワードは、ログイン時に利用したパスワードとなります。")
    elif old_unit:
        notes.append(
            "※認証単位を変更した後も、各電話番号のパスワードは現在ご利用中のパスワードが引き継がれます。"
        )
    return notes


def unit_change_problems(
    problems: dict[str, str], service_number: str, *, temporary_tries: int = 3, permanent_tries: int = 10
) -> list[str]:
    out = []
    for number, reason in problems.items():
        prefix = "" if number == "*" else f"{number} の"
        text = {
            "wrong_password": "パスワードが正しくありません。",
            "password_required": "パスワードを入力してください。",
            "locked": invalidated_message(
                service_number,
                temporary=None,
                temporary_tries=temporary_tries,
                permanent_tries=permanent_tries,
            ),
            "expired": "仮パスワードの有効期限が切れています。" + phone_instructions(service_number),
            "same_unit": "現在と同じ認証単位です。",
            "not_allowed": "このログインでは認証単位を変更できません。お客様電話番号でログインしてください。",
        }.get(reason, "認証単位を変更できませんでした。")
        out.append(prefix + text)
    return out


# ------------------------------------------------------------------ limits (docs/web.md "Security")
def _wait(seconds: int) -> str:
    minutes = max(1, (seconds + 59) // 60)
    return f"約{minutes}分" if minutes < 120 else f"約{(minutes + 59) // 60}時間"


def login_throttled(retry_after_seconds: int) -> str:
    return (
        "ご利用の環境からのログインの失敗が続いたため、しばらくの間ログインを受け付けていません。"
        f"{_wait(retry_after_seconds)}たってから、もう一度お試しください。"
    )


def body_too_large(limit_bytes: int) -> str:
    size = f"{limit_bytes // 1024}KB" if limit_bytes < 1024 * 1024 else f"{limit_bytes // (1024 * 1024)}MB"
    return (
        f"送信された内容が大きすぎます（この画面では{size}まで）。内容を確認して、もう一度送信してください。"
    )


SECRET_TOO_LONG = "確認用IDまたは確認用パスワードが長すぎます（12桁まで）。"


def code_mails_limited(per_hour: int, retry_after_seconds: int) -> str:
    return (
        f"ワンタイムパスワードのメールは、1つの電話番号につき1時間に{per_hour}通まで送信できます。"
        f"{_wait(retry_after_seconds)}たってから、もう一度「ワンタイムパスワードを送信」を押してください。"
    )


def codes_invalidated(per_day: int, service_number: str) -> str:
    return (
        f"ワンタイムパスワードの入力を24時間に{per_day}回誤ったため、パスワードを無効にしました。"
        + phone_instructions(service_number)
    )


def otp_settings_locked(per_day: int, service_number: str) -> str:
    return (
        f"確認用ID・確認用パスワードの入力を24時間に{per_day}回誤ったため、"
        "ワンタイムパスワードの設定変更を停止しています。"
        + phone_instructions(service_number)
        + "仮パスワードを設定すると、設定変更ができるようになります。"
    )


SESSION_ENDED = {
    "idle": IDLE_LOGGED_OUT,
    "lifetime": "ログインしてから一定の時間が経過したため、自動的にログアウトしました。もう一度ログインしてください。",
    "credential_replaced": (
        "パスワードが変更されたため（または仮パスワードが設定されたため）、ログアウトしました。"
        "新しいパスワードでもう一度ログインしてください。"
    ),
    "credential_invalidated": "パスワードが無効になったため、ログアウトしました。",
    "contract_changed": "認証単位が変更されたため、ログアウトしました。新しい認証単位でもう一度ログインしてください。",
    "contract_reset": "お客様電話番号に仮パスワードが設定されたため、ログアウトしました。もう一度ログインしてください。",
}


def session_ended_notice(reason: str | None) -> str | None:
    return SESSION_ENDED.get(reason or "")
