"""FlexiDiT demo: `python app.py` opens the Gradio app (static vs flexible sampling under a compute budget).

Runs locally on the embedded models (CPU is fine) and, unchanged, as a Hugging Face Space (ZeroGPU-safe), where the
large public models can download their weights.
"""
from __future__ import annotations

import argparse
import os
import signal
import socket
import sys


def _at_least(low: int):
    """An argparse type: a whole number >= low, refused with one line (argparse's 'error: argument ...')."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, got {value}")
        return value
    parse.__name__ = f"whole number >= {low}"
    return parse


def _port(text: str) -> int:
    value = _at_least(1)(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"must be at most 65535, got {value}")
    return value


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        """One line, not argparse's usage block first."""
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def parse_args(argv=None) -> argparse.Namespace:
    on_space = bool(os.environ.get("SPACE_ID"))
    p = _Parser(prog="python app.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "0.0.0.0" if on_space else "127.0.0.1"),
                   help="address to listen on (default 127.0.0.1; 0.0.0.0 to serve other machines)")
    p.add_argument("--port", type=_port, default=int(os.environ.get("GRADIO_SERVER_PORT", 7860)),
                   help="port (default 7860)")
    p.add_argument("--share", action="store_true", help="also open a temporary public gradio.live link")
    p.add_argument("--assets", help="folder of the embedded models (default: assets/ or $FLEXIDIT_ASSETS)")
    p.add_argument("--allow-download", action="store_true", default=on_space,
                   help="let the public models (DiT-XL/2, PixArt, CogVideoX) download their weights "
                        "(default: on a Hugging Face Space only)")
    p.add_argument("--threads", type=_at_least(1), help="torch CPU threads (default: torch's choice)")
    p.add_argument("--concurrency", type=_at_least(1), default=1,
                   help="generation jobs that run at once (default 1)")
    p.add_argument("--queue-size", type=_at_least(1), default=16,
                   help="jobs that may wait; beyond that visitors are told the app is busy (default 16)")
    p.add_argument("--time-limit", type=_at_least(1), default=600, metavar="SECONDS",
                   help="a generation job that runs longer is stopped (default 600)")
    p.add_argument("--preload", nargs="*", default=["shapes", "shapes-text", "shapes-video"] if on_space else [],
                   metavar="MODEL", help="models to load at start-up (default: the embedded ones on a Space)")
    return p.parse_args(argv)


def _interrupt(*_):
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second SIGTERM (e.g. from a wrapper) must not break the shutdown
    raise KeyboardInterrupt


def listen_problem(host: str, port: int) -> str | None:
    """Why the server could not listen on host:port, in the system's words, or None: checked before anything
    loads, because Gradio reports every failure to bind as 'Cannot find empty port' (and uvicorn logs its own)."""
    try:
        addresses = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as e:
        return f"the host name does not resolve ({e.strerror})"
    except UnicodeError:
        return "the host name is not valid"
    for family, kind, proto, _, address in addresses:
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
            try:
                probe.bind(address)
            except OSError as e:
                return e.strerror or str(e)
    return None


def main(argv=None) -> int:
    args = parse_args(argv)
    problem = listen_problem(args.host, args.port)
    if problem:
        print(f"error: cannot serve on {args.host}:{args.port}: {problem}", file=sys.stderr)
        return 2
    import torch  # after argument parsing, so that --help is instant
    if args.threads:
        torch.set_num_threads(args.threads)
    from app import build_demo, launch
    from app.runtime import ModelUnavailable
    from flexi_core.errors import FlexiDiTError
    from flexi_core.errors import message as error_message
    demo = build_demo(assets=args.assets, allow_download=args.allow_download, concurrency=args.concurrency,
                      queue_size=args.queue_size, time_limit_s=args.time_limit)
    for name in args.preload:
        try:
            demo.flexidit.models.get(name)
        except (ModelUnavailable, FlexiDiTError, KeyError) as e:
            print(f"preload {name}: {error_message(e)}", file=sys.stderr)
    # SIGTERM (docker stop, a Space restart) is handled like Ctrl-C: Gradio closes the server, which deletes the
    # files it cached for visitors, and the app's own output folder is removed at exit (sys.exit here would skip
    # the server's shutdown and leave Gradio's cached outputs behind)
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        launch(demo, host=args.host, port=args.port, share=args.share)
    except OSError as e:  # a busy port, an address that is not this machine's, a host name that does not resolve
        print(f"error: cannot serve on {args.host}:{args.port}: {_listen_error(e)}", file=sys.stderr)
        return 2
    return 0


def _listen_error(error: OSError) -> str:
    """One line: Gradio's 'Cannot find empty port in range: 7860-7860. You can specify ...' keeps its first
    sentence; socket errors say what the system said."""
    text = error.strerror or (error.args[0] if error.args else "") or type(error).__name__
    text = str(text).split(". ")[0].rstrip(".")
    if text.startswith("Cannot find empty port"):
        return "the port is in use (choose another with --port)"
    return text


if __name__ == "__main__":
    sys.exit(main())
