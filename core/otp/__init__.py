"""One-time passwords (two-step login), per login identity (the operator guide P8–P10, P22–P27).

Statuses are the ``core.enums`` string enums (``OtpStatus``, ``LinkStatus``, ``CodeStatus``), so
the web maps them to messages without copies; the decisions behind them are the pure functions of
``core.rules`` (``otp_status``, ``registration_link_refusal``, ``code_refusal``). No database lock
is ever held across a hash (``core.secrets``): new secrets are hashed before the transaction that
stores them (``prepare_*``), and secrets are checked with no transaction open, between a
transaction that reads (or reserves a try) and one that records the result. Functions taking a
``Session`` never hash; those taking a session factory (``*_in_steps``) own their transactions.

By what they do (import from the module; this package re-exports nothing):

``core.otp.choice``        the number's state, and the customer's choice to use it or not
``core.otp.registration``  仮登録 -> mailed link -> 本登録, the address change, the admin's release
``core.otp.codes``         the login codes: issue, and check in steps
``core.otp.confirmation``  the confirmation ID / password: check, and change in steps
``core.otp.common``        what they share: the errors every part raises, the number's rows
"""
