"""Every command and code block in README.md runs, as a reader following it would run it.

The README is read in order, like one terminal session: each fenced block is found by its
language and run. ``sh`` blocks run in bash in a scratch directory that looks like a fresh clone
(the repository's files linked in, so nothing is written into the repository), with the venv's
``bin`` on PATH, a scratch ``HOME`` and ``CAPWALLET_HOME``, and the variables a block sets
(``T=$(capwallet mint ...)``) kept for the next block. ``python`` blocks run in one Python
session of the venv's Python, so a block can use what an earlier one made; ``js`` blocks with
node, or, for a web page's code, in Chromium on a page of its own origin (its button clicked and
the consent approved); ``toml`` and ``json`` blocks must parse. A block in any other language,
or one without a language, must be registered in ``TEXT_CHECKS`` with a check against real
output (the caveat listing is compared with what ``capwallet inspect`` prints for the token the
README minted): an unregistered block fails the test, so a block added later either runs or says
why it cannot.

What a reader does by hand, the runner does the same way (``SERVERS`` and ``REWRITES``):

* A server command (``capwallet serve``, the fake provider) is what a reader starts in a
  second terminal: it is started in the background, waited for until it answers, and left
  running for the blocks after it. The README's fixed ports (8750 for the wallet, 8790 for
  the fake provider) become free ports, so the test can run beside others.
* ``connect()`` opens the consent page in "the browser": ``BROWSER`` is
  tests/readme_browser.py, which signs in with the link ``capwallet serve`` printed and clicks
  Approve in Chromium.
* ``make test`` is the suite this test is part of: it is checked with ``make -n``.
* The reader's own OpenAI key is the fake provider's key (``OPENAI_API_KEY``), and the
  passphrase they type comes from ``CAPWALLET_PASSPHRASE``.
"""

from __future__ import annotations

import contextlib
import http.server
import json
import os
import re
import select
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
import tomllib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
VENV_BIN = Path(sys.executable).parent
FAKE_KEY = "sk-fake-provider-key"  # fake_provider.DEFAULT_API_KEY
SH_TIMEOUT = 300
PY_TIMEOUT = 180
READY_TIMEOUT = 60


@dataclass(frozen=True)
class Block:
    line: int  # 1-based line of the opening fence
    lang: str
    text: str
    section: str

    @property
    def id(self) -> str:
        return f"L{self.line}-{self.lang or 'text'}"


_FENCE = re.compile(r"^(```+|~~~+)\s*([A-Za-z0-9_+.-]*)[^\n]*$")


def parse_blocks(text: str) -> list[Block]:
    """Fenced code blocks at the start of a line, with the heading they sit under."""
    blocks: list[Block] = []
    lines = text.splitlines()
    section = ""
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("#"):
            section = line.lstrip("#").strip()
        m = _FENCE.match(line)
        if m:
            fence, lang = m.group(1), m.group(2).lower()
            body: list[str] = []
            j = i + 1
            while j < len(lines) and not lines[j].startswith(fence):
                body.append(lines[j])
                j += 1
            if j == len(lines):
                raise AssertionError(f"README.md:{i + 1}: code block never closed")
            blocks.append(Block(i + 1, lang, "\n".join(body) + "\n", section))
            i = j + 1
            continue
        i += 1
    return blocks


BLOCKS = parse_blocks(README.read_text("utf-8"))


# --- how the reader runs things ----------------------------------------------------------------

@dataclass(frozen=True)
class Server:
    """A command a reader leaves running in another terminal."""

    command: re.Pattern[str]
    ready: re.Pattern[str]  # its output once it serves; group 1 is a URL to remember
    remember: str  # the reader env variable that gets group 1


SERVERS = [
    Server(re.compile(r"^capwallet serve\b"),
           re.compile(r"(http://127\.0\.0\.1:\d+/\S*(?:login|sign)\S*)"), "CAPWALLET_README_LOGIN"),
    Server(re.compile(r"^capwallet demo\b.*--keep-running"),
           re.compile(r"(http://127\.0\.0\.1:\d+/\S*(?:login|sign)\S*)"), "CAPWALLET_README_LOGIN"),
    Server(re.compile(r"^python3? -m fake_provider\b"),
           re.compile(r"listening on (http://\S+)"), "CAPWALLET_README_FAKE"),
    Server(re.compile(r"^python3? -m reference_relay\b(?!\.)"),
           re.compile(r"listening on (http://\S+)"), "CAPWALLET_README_RELAY"),
]

# A command that cannot run inside the test as written, and what runs instead (and why).
REWRITES: list[tuple[re.Pattern[str], str, str]] = [
    (re.compile(r"^make test\b"), "make -n test >/dev/null",
     "this test is part of `make test`: running it would recurse; check that the target exists"),
]

# Checks of what a block printed, by a pattern of the block's text.
OUTPUT_CHECKS: list[tuple[re.Pattern[str], Callable[[str], None]]] = []


def _check_demo(out: str) -> None:
    assert re.search(r"^Next: .*capwallet ", out, re.M), (
        "make demo must end by telling the reader what to type next:\n" + out[-2000:])
    assert not re.search(r"\b1 calls\b", out), "one call is '1 call':\n" + out[-2000:]


def _check_token_example(out: str) -> None:
    assert out.split()[:2] == ["True", "None"], f"the token example must allow: {out!r}"


OUTPUT_CHECKS += [
    (re.compile(r"^make demo\b", re.M), _check_demo),
    (re.compile(r"Verifier\(Keyring"), _check_token_example),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def logical_lines(text: str) -> list[str]:
    """Shell commands: a line ending in a backslash continues on the next (kept as written,
    so bash reads the same command)."""
    out: list[str] = []
    pending = ""
    for raw in text.splitlines():
        if raw.rstrip().endswith("\\"):
            pending += raw.rstrip() + "\n"
            continue
        out.append(pending + raw)
        pending = ""
    if pending:
        out.append(pending)
    return [line for line in out if line.strip()]


def command_of(line: str) -> str:
    """The line without a trailing comment (good enough for matching: no '#' inside quotes
    in the README's server and rewrite commands)."""
    return re.sub(r"\s+#.*$", "", line.strip())


@dataclass
class Reader:
    """One terminal session over the whole README."""

    cwd: Path
    env: dict[str, str]
    ports: dict[str, int]
    log_dir: Path
    groups: list[subprocess.Popen[Any]] = field(default_factory=list)
    outputs: dict[int, str] = field(default_factory=dict)  # block line -> what it printed
    failed: list[str] = field(default_factory=list)
    python: subprocess.Popen[str] | None = None

    def substitute(self, text: str) -> str:
        for fixed, port in self.ports.items():
            text = re.sub(rf"\b{fixed}\b", str(port), text)
        return text

    # -- sh ---------------------------------------------------------------------------------

    def run_sh(self, block: Block) -> str:
        printed: list[str] = []
        chunk: list[str] = []
        for line in logical_lines(self.substitute(block.text)):
            cmd = command_of(line)
            server = next((s for s in SERVERS if s.command.search(cmd)), None)
            if server is not None:
                printed.append(self._run_chunk(chunk, block))
                chunk = []
                printed.append(self._start_server(server, cmd.rstrip("& "), block))
                continue
            for pattern, replacement, _why in REWRITES:
                if pattern.search(cmd):
                    line = replacement
            chunk.append(line)
        printed.append(self._run_chunk(chunk, block))
        return "".join(printed)

    def _run_chunk(self, lines: list[str], block: Block) -> str:
        if not lines:
            return ""
        state = self.log_dir / f"env-{block.line}-{len(self.groups)}"
        script = "\n".join([
            "set -a", "set -eo pipefail", f"trap 'env -0 > {shlex.quote(str(state))}' EXIT",
            *lines,
        ]) + "\n"
        log = self.log_dir / f"sh-{block.line}-{len(self.groups)}.log"
        with open(log, "w+b") as out:
            proc = subprocess.Popen(
                ["bash", "-c", script], cwd=self.cwd, env=self.env, stdin=subprocess.DEVNULL,
                stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            )
            self.groups.append(proc)
            try:
                code = proc.wait(SH_TIMEOUT)
            except subprocess.TimeoutExpired:
                _kill_group(proc)
                code = -1
            out.seek(0)
            text = out.read().decode("utf-8", "replace")
        if code != 0:
            raise AssertionError(
                f"README.md:{block.line} ({block.section}): the sh block failed "
                f"(exit {code}{', timed out' if code == -1 else ''}):\n"
                + "\n".join(lines) + f"\n--- output ---\n{text[-4000:]}")
        if state.exists():
            self._load_env(state.read_bytes())
        return text

    def _load_env(self, dump: bytes) -> None:
        env: dict[str, str] = {}
        for item in dump.split(b"\0"):
            name, sep, value = item.decode("utf-8", "replace").partition("=")
            if sep and name not in ("_", "SHLVL", "OLDPWD", "SHELLOPTS", "BASHOPTS"):
                env[name] = value
        if env.get("PWD"):
            self.cwd = Path(env["PWD"])
        self.env = env

    def _start_server(self, server: Server, cmd: str, block: Block) -> str:
        if re.match(r"^capwallet serve\b", cmd) and "--port" not in cmd:
            cmd += f" --port {self.ports['8750']}"
        log = self.log_dir / f"server-{block.line}-{len(self.groups)}.log"
        with open(log, "wb") as out:  # the server keeps writing to it until teardown
            proc = subprocess.Popen(["bash", "-c", "exec " + cmd], cwd=self.cwd, env=self.env,
                                    stdin=subprocess.DEVNULL, stdout=out,
                                    stderr=subprocess.STDOUT, start_new_session=True)
        self.groups.append(proc)
        deadline = time.monotonic() + READY_TIMEOUT
        while True:
            text = log.read_text("utf-8", "replace")
            m = server.ready.search(text)
            if m:
                self.env[server.remember] = m.group(1)
                return text
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(
                    f"README.md:{block.line}: `{cmd}` did not start "
                    f"(exit {proc.poll()}):\n{text[-4000:]}")
            time.sleep(0.1)

    # -- other languages --------------------------------------------------------------------

    def run_python(self, block: Block) -> str:
        """In the reader's one Python session (tests/readme_python.py): a later block may use
        what an earlier one made, like ``conn``."""
        if self.python is None or self.python.poll() is not None:
            self.python = subprocess.Popen(
                [str(VENV_BIN / "python"), str(ROOT / "tests" / "readme_python.py")],
                cwd=self.cwd, env=self.env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                stderr=open(self.log_dir / "python.log", "ab"),
                text=True, start_new_session=True)
        proc = self.python
        assert proc.stdin is not None and proc.stdout is not None
        name = f"README.md:{block.line}"
        proc.stdin.write(json.dumps({"code": self.substitute(block.text), "name": name}) + "\n")
        proc.stdin.flush()
        ready, _, _ = select.select([proc.stdout], [], [], PY_TIMEOUT)
        if not ready:
            _kill_group(proc)
            raise AssertionError(f"{name}: the python block ran over {PY_TIMEOUT} s")
        line = proc.stdout.readline()
        if not line:
            raise AssertionError(f"{name}: the Python session ended (exit {proc.wait()})")
        result = json.loads(line)
        if not result["ok"]:
            raise AssertionError(
                f"{name} ({block.section}): the python block failed:\n{result['out'][-3000:]}\n"
                f"{result['error'][-3000:]}")
        out: str = result["out"]
        return out

    def run_js(self, block: Block) -> str:
        if BROWSER_JS.search(block.text):
            return self.run_in_browser(block)
        path = self.cwd / f"readme-block-{block.line}.mjs"
        path.write_text(self.substitute(block.text), "utf-8")
        return self._run_file(["node", str(path)], block, PY_TIMEOUT)

    def run_in_browser(self, block: Block) -> str:
        """A web page's code: served on its own loopback origin in a page with an import map
        to the capwallet package (js/src) and the openai SDK (node_modules), the elements it
        names, and Chromium signed in to the wallet. If it wires a button, the button is
        clicked and the consent in the popup approved, as a user would; what the page writes
        into an element is what the block printed."""
        from playwright.sync_api import sync_playwright

        ids = sorted(set(re.findall(r"\b([A-Za-z_]\w*)\.(?:onclick|textContent)\b",
                                    block.text)))
        page_dir = self.log_dir / "web"
        page_dir.mkdir(exist_ok=True)
        (page_dir / f"block-{block.line}.mjs").write_text(self.substitute(block.text), "utf-8")
        imports = {"capwallet": "/js/src/index.js", "openai": "/node_modules/openai/index.mjs"}
        body = "".join(f'<button id="{i}">{i}</button>' if i.endswith("Button") else
                       f'<pre id="{i}"></pre>' for i in ids)
        (page_dir / f"block-{block.line}.html").write_text(
            '<!doctype html><meta charset="utf-8"><title>README block</title>'
            f'<script type="importmap">{json.dumps({"imports": imports})}</script>'
            f'{body}<script type="module" src="/readme-web/block-{block.line}.mjs"></script>',
            "utf-8")
        with _static_site({"/readme-web/": page_dir, "/js/src/": ROOT / "js" / "src",
                           "/node_modules/openai/": ROOT / "node_modules" / "openai"}) as site, \
                sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium",
                                        args=["--no-sandbox", "--disable-gpu"])
            try:
                context = browser.new_context()
                errors: list[str] = []
                wallet = context.new_page()
                wallet.goto(self.env["CAPWALLET_README_LOGIN"])
                wallet.wait_for_selector("html[data-wallet=ready]", timeout=30_000)
                page = context.new_page()
                page.on("pageerror", lambda exc: errors.append(str(exc)))
                page.on("response", lambda r: errors.append(f"{r.status} {r.url}")
                        if r.status >= 400 and not r.url.endswith("/favicon.ico") else None)
                page.goto(f"{site}/readme-web/block-{block.line}.html")
                page.wait_for_load_state("networkidle")
                buttons = [i for i in ids if i.endswith("Button")]
                for button in buttons:
                    with page.expect_popup(timeout=30_000) as popup_info:
                        page.click(f"#{button}")
                        page.wait_for_timeout(500)
                        assert not errors, f"README.md:{block.line}: the page threw: {errors}"
                    popup = popup_info.value
                    popup.locator("#approve").click(timeout=30_000)
                outputs = [i for i in ids if not i.endswith("Button")]
                for out in outputs:
                    page.wait_for_function(
                        f"document.getElementById({json.dumps(out)}).textContent.length > 0",
                        timeout=60_000)
                assert not errors, f"README.md:{block.line}: the page threw: {errors}"
                return "".join(page.text_content(f"#{i}") or "" for i in outputs)
            finally:
                browser.close()

    def _run_file(self, argv: list[str], block: Block, timeout: float) -> str:
        try:
            r = subprocess.run(argv, cwd=self.cwd, env=self.env, stdin=subprocess.DEVNULL,
                               capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            raise AssertionError(
                f"README.md:{block.line}: the {block.lang} block ran over {timeout} s: "
                f"{exc.stdout!r} {exc.stderr!r}") from None
        if r.returncode != 0:
            raise AssertionError(
                f"README.md:{block.line} ({block.section}): the {block.lang} block failed "
                f"(exit {r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
        return r.stdout

    def stop(self) -> None:
        if self.python is not None and self.python.stdin is not None:
            self.python.stdin.close()
            try:
                self.python.wait(10)
            except subprocess.TimeoutExpired:
                self.python.kill()
                self.python.wait()
        for proc in reversed(self.groups):
            _kill_group(proc)


def _kill_group(proc: subprocess.Popen[Any]) -> None:
    """Stop a block's process group (a server, or what a block left in the background)."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        pass
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)  # anything still in the group
    proc.wait()


BROWSER_JS = re.compile(r"\bhandleRedirect\b|\bdocument\.|\.onclick\b")  # a web page's code


@contextlib.contextmanager
def _static_site(folders: dict[str, Path]) -> Iterator[str]:
    """Serve files of these folders (URL prefix -> folder) on a loopback port: a web app's
    origin, another port than the wallet's."""
    types = {".js": "text/javascript", ".mjs": "text/javascript", ".html": "text/html",
             ".json": "application/json", ".map": "application/json"}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            for prefix, folder in folders.items():
                if path.startswith(prefix):
                    target = (folder / path[len(prefix):]).resolve()
                    if target.is_file() and folder.resolve() in target.parents:
                        data = target.read_bytes()
                        self.send_response(200)
                        self.send_header("content-type", types.get(target.suffix, "text/plain"))
                        self.send_header("content-length", str(len(data)))
                        self.end_headers()
                        self.wfile.write(data)
                        return
            self.send_error(404)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


# --- blocks that are not programs: checked against real output -------------------------------

def check_caveat_listing(reader: Reader, block: Block) -> None:
    """The caveat listing must be what `capwallet inspect` prints for the README's token $T,
    in the same order; only the expiry time and the budget's counter nonce differ per run."""
    token = reader.env.get("T")
    assert token, "the caveat listing needs $T from the token block above it"
    r = subprocess.run([str(VENV_BIN / "capwallet"), "inspect", token], capture_output=True,
                       text=True, env=reader.env, timeout=60)
    assert r.returncode == 0, r.stderr
    printed = [m.group(1) for m in re.finditer(r"^\s+\d+\. (.*)$", r.stdout, re.M)]
    shown = [command_of(line) for line in block.text.splitlines() if line.strip()]
    assert len(shown) == len(printed), (shown, printed)
    for doc, real in zip(shown, printed, strict=True):
        pattern = re.escape(doc)
        pattern = re.sub(r"expires\\ \d+", r"expires\\ \\d+", pattern)
        pattern = re.sub(r"budget\\ [0-9a-f]{16}", r"budget\\ [0-9a-f]{16}", pattern)
        assert re.fullmatch(pattern, real), f"README shows {doc!r}, inspect prints {real!r}"


TEXT_CHECKS: list[tuple[Callable[[Block], bool], Callable[[Reader, Block], None]]] = [
    (lambda b: b.text.startswith("app https://blog.example\n"), check_caveat_listing),
]


def run_block(reader: Reader, block: Block) -> str:
    if block.lang in ("sh", "bash", "shell", "console"):
        return reader.run_sh(block)
    if block.lang in ("python", "py", "python3"):
        return reader.run_python(block)
    if block.lang in ("js", "javascript", "mjs"):
        return reader.run_js(block)
    if block.lang == "toml":
        tomllib.loads(block.text)
        return ""
    if block.lang == "json":
        json.loads(block.text)
        return ""
    for matches, check in TEXT_CHECKS:
        if matches(block):
            check(reader, block)
            return ""
    raise AssertionError(
        f"README.md:{block.line} ({block.section}): a {block.lang or 'plain'} block that "
        "nothing runs or checks. Give it a language this test runs (sh, python, js, toml, "
        "json) or add a check against real output to TEXT_CHECKS in tests/test_readme.py.")


# --- the tests --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def reader(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Reader]:
    if (ROOT / ".venv" / "bin") == VENV_BIN:
        # The scratch clone links this venv: bring its install stamp up to date first (a
        # pyproject.toml newer than the stamp would make `make demo` rebuild the venv there).
        subprocess.run(["make", "-C", str(ROOT), "-s", ".venv/.installed-stamp"], check=True,
                       capture_output=True, timeout=900)
    base = tmp_path_factory.mktemp("readme")
    clone = base / "capwallet"
    clone.mkdir()
    for entry in ROOT.iterdir():
        if entry.name not in ("artifacts", ".git", ".pytest_cache", ".hypothesis"):
            (clone / entry.name).symlink_to(entry)
    (base / "home").mkdir()
    logs = base / "logs"
    logs.mkdir()
    ports = {"8750": _free_port(), "8790": _free_port()}
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("CAPWALLET_") and k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    env.update({
        "HOME": str(base / "home"),
        "CAPWALLET_HOME": str(base / "home" / ".capwallet"),
        "CAPWALLET_KDF_LIMITS": "interactive",  # the reader's machine: fast enough either way
        "CAPWALLET_URL": f"http://127.0.0.1:{ports['8750']}",
        "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "OPENAI_API_KEY": FAKE_KEY,
        # What the reader types when asked for the passphrase (no terminal here: the README
        # documents this variable for scripts; tests/test_cli_terminal.py covers the prompt).
        "CAPWALLET_PASSPHRASE": "readme reader passphrase",
        "BROWSER": f"{VENV_BIN / 'python'} {ROOT / 'tests' / 'readme_browser.py'} %s",
        "PYTHONUNBUFFERED": "1",
    })
    r = Reader(cwd=clone, env=env, ports=ports, log_dir=logs)
    try:
        yield r
    finally:
        r.stop()


def test_readme_has_blocks() -> None:
    langs = {b.lang for b in BLOCKS}
    assert {"sh", "python"} <= langs, langs


@pytest.mark.parametrize("block", BLOCKS, ids=[b.id for b in BLOCKS])
def test_readme_block(reader: Reader, block: Block) -> None:
    if reader.failed:
        # Blocks build on each other like a terminal session: after a failure, say which one.
        pytest.fail(f"an earlier README block failed ({reader.failed[0]}); fix that first")
    try:
        out = run_block(reader, block)
    except BaseException:
        reader.failed.append(block.id)
        raise
    reader.outputs[block.line] = out
    for pattern, check in OUTPUT_CHECKS:
        if pattern.search(block.text):
            check(out)


def test_registries_match_the_readme() -> None:
    """Every registered special case still matches a README block, so none goes stale."""
    for matches, check in TEXT_CHECKS:
        assert any(matches(b) for b in BLOCKS), f"{check.__name__} matches no README block"
    for pattern, check_output in OUTPUT_CHECKS:
        assert any(pattern.search(b.text) for b in BLOCKS), (
            f"{check_output.__name__} matches no README block")
    for pattern, _replacement, why in REWRITES:
        assert any(pattern.search(command_of(line)) for b in BLOCKS
                   for line in logical_lines(b.text)), f"rewrite for {why!r} matches nothing"


def test_parse_blocks_reads_fences() -> None:
    text = "# A\n```sh\necho hi\n```\ntext\n## B\n```\nplain\n```\n"
    got = parse_blocks(text)
    assert [(b.line, b.lang, b.text, b.section) for b in got] == [
        (2, "sh", "echo hi\n", "A"), (7, "", "plain\n", "B")]
    with pytest.raises(AssertionError, match="never closed"):
        parse_blocks("```sh\necho\n")
