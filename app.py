"""FlexiDiT demo: `python app.py` opens the Gradio app (static vs flexible sampling under a compute budget).

Runs locally on the embedded models (CPU is fine) and, unchanged, as a Hugging Face Space (ZeroGPU-safe), where the
large public models can download their weights.
"""
from __future__ import annotations

import argparse
import os
import signal
import sys


def parse_args(argv=None) -> argparse.Namespace:
    on_space = bool(os.environ.get("SPACE_ID"))
    p = argparse.ArgumentParser(prog="python app.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "0.0.0.0" if on_space else "127.0.0.1"),
                   help="address to listen on (default 127.0.0.1; 0.0.0.0 to serve other machines)")
    p.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", 7860)),
                   help="port (default 7860)")
    p.add_argument("--share", action="store_true", help="also open a temporary public gradio.live link")
    p.add_argument("--assets", help="folder of the embedded models (default: assets/ or $FLEXIDIT_ASSETS)")
    p.add_argument("--allow-download", action="store_true", default=on_space,
                   help="let the public models (DiT-XL/2, PixArt, CogVideoX) download their weights "
                        "(default: on a Hugging Face Space only)")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--concurrency", type=int, default=1, help="generation jobs that run at once (default 1)")
    p.add_argument("--queue-size", type=int, default=16,
                   help="jobs that may wait; beyond that visitors are told the app is busy (default 16)")
    p.add_argument("--preload", nargs="*", default=["shapes", "shapes-text", "shapes-video"] if on_space else [],
                   metavar="MODEL", help="models to load at start-up (default: the embedded ones on a Space)")
    return p.parse_args(argv)


def _interrupt(*_):
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second SIGTERM (e.g. from a wrapper) must not break the shutdown
    raise KeyboardInterrupt


def main(argv=None) -> int:
    args = parse_args(argv)
    import torch  # after argument parsing, so that --help is instant
    if args.threads:
        torch.set_num_threads(args.threads)
    from app import build_demo, launch
    demo = build_demo(assets=args.assets, allow_download=args.allow_download, concurrency=args.concurrency,
                      queue_size=args.queue_size)
    for name in args.preload:
        try:
            demo.flexidit.models.get(name)
        except (FileNotFoundError, ValueError, KeyError) as e:
            print(f"preload {name}: {e}", file=sys.stderr)
    # SIGTERM (docker stop, a Space restart) is handled like Ctrl-C: Gradio closes the server, which deletes the
    # files it cached for visitors, and the app's own output folder is removed at exit (sys.exit here would skip
    # the server's shutdown and leave Gradio's cached outputs behind)
    signal.signal(signal.SIGTERM, _interrupt)
    launch(demo, host=args.host, port=args.port, share=args.share)
    return 0


if __name__ == "__main__":
    sys.exit(main())
