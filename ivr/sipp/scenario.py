"""Render a SIPp scenario (XML) for one ``Caller``.

The scenario logs what happens with ``<log>`` actions, one ``EVENT <name> <detail> <clock_tick>``
line each, which ``ivr.sipp.runner`` reads back into a ``CallResult``. A BYE from the far end is
accepted at any point of the script (``optional="global"``).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from xml.sax.saxutils import quoteattr

from ivr.sipp.model import Caller, ExpectHangup, HangUp, SendDigits, Step, Wait
from ivr.sipp.rtp import RtpEventStream

FAILURE_CODES = (
    400, 401, 403, 404, 405, 407, 408, 410, 415, 420, 480, 481, 483, 484, 485, 486, 487, 488,
    500, 501, 502, 503, 504, 600, 603, 604, 606,
)  # fmt: skip


@dataclass
class RenderedScenario:
    xml: str
    pcaps: dict[str, bytes] = field(default_factory=dict)  # file name -> content
    call_id: str = ""


def _log(message: str) -> str:
    return f'<nop><action><log message="{message} [clock_tick]"/></action></nop>\n'


def _cdata(message: str) -> str:
    return "<![CDATA[\n" + message.strip("\n") + "\n\n]]>"


class _Builder:
    def __init__(self, caller: Caller, call_id: str, directory: Path) -> None:
        self.caller = caller
        self.call_id = call_id
        self.directory = directory
        self.parts: list[str] = []
        self.pcaps: dict[str, bytes] = {}
        self.rtp = RtpEventStream(
            ssrc=random.getrandbits(32), sequence=random.getrandbits(15), timestamp=random.getrandbits(31)
        )
        user = caller.caller_id if caller.caller_id is not None else "anonymous"
        host = "[local_ip]" if caller.caller_id is not None else "anonymous.invalid"
        display = "Anonymous" if caller.caller_id is None else user
        self.from_header = f'From: "{display}" <sip:{user}@{host}>;tag=[pid]IVR[call_number]'
        self.to_header = f"To: <sip:{caller.dialled}@[remote_ip]:[remote_port]>"
        self.contact = (
            f"Contact: <sip:{'caller' if caller.caller_id is None else user}@[local_ip]:[local_port]>"
        )

    def in_dialog(self, method: str, body: str = "", content_type: str = "") -> str:
        lines = [
            f"{method} [next_url] SIP/2.0",
            "Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]",
            self.from_header,
            f"{self.to_header}[peer_tag_param]",
            "Call-ID: [call_id]",
            f"CSeq: [cseq] {method}",
            self.contact,
            "Max-Forwards: 70",
        ]
        if content_type:
            lines.append(f"Content-Type: {content_type}")
        lines.append("Content-Length: [len]")
        text = "\n".join(lines) + "\n\n" + body
        return text

    def invite(self) -> None:
        caller = self.caller
        headers = [
            f"INVITE sip:{caller.dialled}@[remote_ip]:[remote_port] SIP/2.0",
            "Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]",
            self.from_header,
            self.to_header,
            "Call-ID: [call_id]",
            "CSeq: [cseq] INVITE",
            self.contact,
            "Max-Forwards: 70",
            "User-Agent: ivr-sipp-caller",
            "Allow: INVITE, ACK, CANCEL, BYE, INFO, OPTIONS",
        ]
        if caller.caller_id is not None:
            headers.append(f"P-Asserted-Identity: <sip:{caller.caller_id}@[local_ip]>")
        if caller.caller_id is None or caller.privacy:
            headers.append("Privacy: id")
        headers += ["Content-Type: application/sdp", "Content-Length: [len]"]
        sdp = [
            "v=0",
            "o=ivr-caller 1 1 IN IP[local_ip_type] [local_ip]",
            "s=ivr caller",
            "c=IN IP[media_ip_type] [media_ip]",
            "t=0 0",
            "m=audio [media_port] RTP/AVP 0 8 101",
            "a=rtpmap:0 PCMU/8000",
            "a=rtpmap:8 PCMA/8000",
            "a=rtpmap:101 telephone-event/8000",
            "a=fmtp:101 0-15",
            "a=ptime:20",
            "a=sendrecv",
        ]
        body = "\n".join(sdp) + "\n"
        message = "\n".join(headers) + "\n\n" + body
        self.parts.append(_log("EVENT invite -"))
        self.parts.append(f'<send retrans="500" start_rtd="setup">{_cdata(message)}</send>\n')
        if caller.auth_password is not None:
            # A registered phone: answer the digest challenge, then send the INVITE again.
            self.parts.append('<recv response="100" optional="true"/>\n')
            log_401 = '<action><log message="SIP 401 [clock_tick]"/></action>'
            self.parts.append(f'<recv response="401" auth="true">{log_401}</recv>\n')
            ack = "\n".join(
                [
                    f"ACK sip:{caller.dialled}@[remote_ip]:[remote_port] SIP/2.0",
                    "[last_Via:]",
                    self.from_header,
                    "[last_To:]",
                    "Call-ID: [call_id]",
                    "CSeq: [last_cseq_number] ACK",
                    "Max-Forwards: 70",
                    "Content-Length: 0",
                ]
            )
            self.parts.append(f"<send>{_cdata(ack)}</send>\n")
            user = caller.caller_id or "anonymous"
            authorization = f"[authentication username={user} password={caller.auth_password}]"
            again = "\n".join([*headers[:-2], authorization, *headers[-2:]]) + "\n\n" + body
            self.parts.append(f'<send retrans="500">{_cdata(again)}</send>\n')
        for code in (100, 180, 183):
            self.parts.append(
                f'<recv response="{code}" optional="true">'
                f'<action><log message="SIP {code} [clock_tick]"/></action></recv>\n'
            )
        for code in FAILURE_CODES:
            self.parts.append(
                f'<recv response="{code}" optional="true" next="rejected">'
                f'<action><log message="SIP {code} [clock_tick]"/></action></recv>\n'
            )
        # A BYE from the far end, at any point of the call. SIPp matches a global optional recv
        # wherever the call is; it sits here because SIPp wants a mandatory recv after it.
        self.parts.append('<recv request="BYE" optional="global" next="remote_bye"/>\n')
        timeout_ms = int(caller.answer_timeout * 1000)
        self.parts.append(
            f'<recv response="200" rtd="setup" rrs="true" timeout="{timeout_ms}" ontimeout="no_answer">'
            '<action><log message="SIP 200 [clock_tick]"/></action></recv>\n'
        )
        ack = self.in_dialog("ACK").replace("CSeq: [cseq] ACK", "CSeq: [last_cseq_number] ACK")
        self.parts.append(f"<send>{_cdata(ack)}</send>\n")
        self.parts.append(_log("EVENT answered -"))

    def step(self, index: int, step: Step) -> None:
        if isinstance(step, Wait):
            self.parts.append(f'<pause milliseconds="{max(1, int(step.seconds * 1000))}"/>\n')
            self.rtp.advance(step.seconds)
        elif isinstance(step, SendDigits):
            if self.caller.dtmf_mode == "info":
                self._info_digits(step)
            else:
                self._rtp_digits(index, step)
        elif isinstance(step, ExpectHangup):
            ms = max(1, int(step.within * 1000))
            self.parts.append(
                f'<recv request="BYE" timeout="{ms}" ontimeout="expect_failed_{index}" next="remote_bye"/>\n'
            )
            return  # the step is done when the BYE arrives
        elif isinstance(step, HangUp):
            self.parts.append(_log(f"EVENT step_done {index}"))
            self.parts.append('<nop next="local_bye"/>\n')
            return
        self.parts.append(_log(f"EVENT step_done {index}"))

    def _rtp_digits(self, index: int, step: SendDigits) -> None:
        name = f"dtmf-{index}.pcap"
        self.pcaps[name] = self.rtp.digits_pcap(step.digits, tone=step.tone, gap=step.gap)
        path = quoteattr(str(self.directory / name))
        self.parts.append(f"<nop><action><exec play_pcap_audio={path}/></action></nop>\n")
        self.parts.append(f'<pause milliseconds="{int(step.seconds * 1000) + 20}"/>\n')

    def _info_digits(self, step: SendDigits) -> None:
        for key in step.digits:
            body = f"Signal={key}\nDuration={int(step.tone * 1000)}\n"
            self.parts.append(
                f"<send>{_cdata(self.in_dialog('INFO', body, 'application/dtmf-relay'))}</send>\n"
            )
            self.parts.append('<recv response="200"/>\n')
            self.parts.append(f'<pause milliseconds="{int((step.tone + step.gap) * 1000)}"/>\n')
        self.rtp.advance(step.seconds)

    def endings(self, steps: list[Step]) -> None:
        # Script done without an explicit ending: hang up.
        self.parts.append('<nop next="local_bye"/>\n')
        for index, step in enumerate(steps):
            if isinstance(step, ExpectHangup):
                self.parts.append(f'<label id="expect_failed_{index}"/>\n')
                self.parts.append(_log(f"EVENT expect_failed {index}"))
                self.parts.append('<nop next="local_bye"/>\n')
        ok = "\n".join(
            [
                "SIP/2.0 200 OK",
                "[last_Via:]",
                "[last_From:]",
                "[last_To:]",
                "[last_Call-ID:]",
                "[last_CSeq:]",
                self.contact,
                "Content-Length: 0",
            ]
        )
        self.parts.append('<label id="remote_bye"/>\n')
        self.parts.append(_log("EVENT remote_bye -"))
        self.parts.append(f"<send>{_cdata(ok)}</send>\n")
        self.parts.append('<nop next="done"/>\n')

        self.parts.append('<label id="local_bye"/>\n')
        self.parts.append(_log("EVENT local_bye -"))
        self.parts.append(f'<send retrans="500">{_cdata(self.in_dialog("BYE"))}</send>\n')
        self.parts.append('<recv response="200" timeout="5000" ontimeout="done"/>\n')
        self.parts.append('<nop next="done"/>\n')

        ack = "\n".join(
            [
                f"ACK sip:{self.caller.dialled}@[remote_ip]:[remote_port] SIP/2.0",
                "[last_Via:]",
                self.from_header,
                "[last_To:]",
                "Call-ID: [call_id]",
                "CSeq: [last_cseq_number] ACK",
                "Max-Forwards: 70",
                "Content-Length: 0",
            ]
        )
        self.parts.append('<label id="rejected"/>\n')
        self.parts.append(f"<send>{_cdata(ack)}</send>\n")
        self.parts.append(_log("EVENT rejected -"))
        self.parts.append('<nop next="done"/>\n')

        self.parts.append('<label id="no_answer"/>\n')
        self.parts.append(_log("EVENT no_answer -"))

        self.parts.append('<label id="done"/>\n')
        self.parts.append(_log("EVENT done -"))


def render_scenario(caller: Caller, call_id: str, directory: Path) -> RenderedScenario:
    """The scenario XML and the pcap files it plays (to be written into ``directory``)."""
    builder = _Builder(caller, call_id, directory)
    builder.invite()
    for index, step in enumerate(caller.steps):
        builder.step(index, step)
    builder.endings(caller.steps)
    xml = (
        '<?xml version="1.0" encoding="ISO-8859-1" ?>\n'
        f'<scenario name="ivr caller {caller.name or call_id}">\n' + "".join(builder.parts) + "</scenario>\n"
    )
    return RenderedScenario(xml=xml, pcaps=builder.pcaps, call_id=call_id)
