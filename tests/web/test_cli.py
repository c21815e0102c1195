"""`ivr web` as an operator runs it: a subprocess serving the pages, or a clear refusal."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import httpx

from tests.fixtures.web import IVR, WebDatabase, env_for, free_port


def test_ivr_web_serves_the_login_page(web_database: WebDatabase) -> None:
    port = free_port()
    process = subprocess.Popen(
        [*IVR, "web"], env=env_for(web_database.url, port), stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                response = httpx.get(f"http://127.0.0.1:{port}/login", timeout=2)
                break
            except httpx.TransportError:
                assert process.poll() is None, process.stdout.read().decode() if process.stdout else ""
                assert time.monotonic() < deadline, "ivr web did not start"
                time.sleep(0.2)
        assert response.status_code == 200
        assert "電話番号（ハイフンなし）" in response.text
        assert "HttpOnly" in response.headers["set-cookie"]
        api = httpx.post(f"http://127.0.0.1:{port}/api/login", json={"number": "0399999999", "password": "x"})
        assert api.status_code == 401
    finally:
        process.terminate()
        output = process.communicate(timeout=15)[0].decode()
    assert "web_listening" in output


def test_ivr_web_refuses_a_database_without_schema(tmp_path: Path) -> None:
    result = subprocess.run(
        [*IVR, "web"],
        env=env_for(f"sqlite:///{tmp_path / 'empty.sqlite3'}", free_port()),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "ivr db upgrade" in result.stderr
