"""Published checkpoints: say what a folder is, and convert the ones that need it into our folders.

    python -m workflows.checkpoints inspect checkpoints/show-o-w-clip-vit-512x512
    python -m workflows.checkpoints convert checkpoints/UP-VLA-Calvin checkpoints/upvla-calvin \
        --vq checkpoints/magvitv2 --clip checkpoints/clip-vit-large-patch14-336 --tokenizer checkpoints/phi-1_5
    python -m workflows.checkpoints convert checkpoints/magvitv2 artifacts/vq-magvitv2 --image-size 512
    python -m workflows.checkpoints check --profile paper       # the folders the config names: there, and fit?

`inspect` prints the kind (Show-o, UP-VLA, MagVIT-v2, CLIP, Phi, a tokenizer, or our own), the weights files
with their sizes, the parameter count and dtypes, and the architecture read from config.json and the shapes.
`convert` writes an UP-VLA checkpoint as our checkpoint folder (then `python -m workflows.evaluate
--checkpoint <out> --preset upvla_release` evaluates the authors' model), or a MagVIT-v2 folder as our VQ
folder. Show-o, CLIP, Phi and tokenizer folders load as they are (`inspect` says through which key). A
conversion writes nothing unless it succeeds; an existing output folder is never overwritten. `check`
reads the config (--params / --profile / --preset / --set, as every stage) and checks each checkpoint folder it
names: present, of the kind its key takes, and of the config's sizes; a missing one comes with the command that
downloads it. Nothing here downloads anything.
"""

from __future__ import annotations

from components.core.entry import cli_main, prepare_environment

prepare_environment()  # before transformers is imported

import argparse  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

from components.core.config import add_config_args, config_from_args  # noqa: E402
from components.evaluation.published import convert_magvitv2, convert_release  # noqa: E402
from model.published import FOLDER_KEYS, REFERENCE_MAX_TEXT_LEN, check_folder, inspect_folder  # noqa: E402

# where each published folder comes from (run by the user; nothing downloads at run time)
DOWNLOADS = {
    "show-o-w-clip-vit-512x512": "showlab/show-o-w-clip-vit-512x512",
    "magvitv2": "showlab/magvitv2",
    "clip-vit-large-patch14-336": "openai/clip-vit-large-patch14-336",
    "phi-1_5": "microsoft/phi-1_5",
    "UP-VLA-Calvin": "CladernyJorn/UP-VLA-Calvin",
}


@cli_main
def main(argv: list[str] | None = None) -> int:
    """Run `inspect` or `convert` (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    inspect = commands.add_parser("inspect", help="what a checkpoint folder is")
    inspect.add_argument("folders", nargs="+", type=Path)
    convert = commands.add_parser("convert", help="an UP-VLA or MagVIT-v2 folder -> our folder")
    convert.add_argument("source", type=Path)
    convert.add_argument("out", type=Path, help="a new folder (an existing one is never overwritten)")
    convert.add_argument("--vq", type=Path, help="UP-VLA: Show-o's MagVIT-v2 folder (magvitv2)")
    convert.add_argument("--clip", type=Path, help="UP-VLA: the CLIP folder (clip-vit-large-patch14-336)")
    convert.add_argument("--tokenizer", type=Path, help="UP-VLA: the Phi-1.5 folder with its tokenizer (phi-1_5)")
    convert.add_argument("--showo", type=Path, help="UP-VLA: the Show-o folder it was trained from, when the "
                                                    "checkpoint folder has no config.json of its own")
    convert.add_argument("--max-text-len", type=int, default=REFERENCE_MAX_TEXT_LEN,
                         help="UP-VLA: instruction budget; the authors' text slot is this + 1 (default %(default)s)")
    convert.add_argument("--image-size", type=int, default=512, help="MagVIT-v2: input side, px (default 512)")
    convert.add_argument("--no-progress", action="store_true", help="no progress bar")
    check = commands.add_parser("check", help="the checkpoint folders the config names: present and fitting")
    add_config_args(check)
    args = parser.parse_args(argv)
    if args.command == "check":
        return _check(args)
    try:
        return _run(parser, args)
    except (FileNotFoundError, FileExistsError, ValueError) as err:  # bad input: one line naming file and key
        print(f"error: {err}", file=sys.stderr)
        return 2


def _run(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    if args.command == "inspect":
        print("\n\n".join(inspect_folder(folder).format() for folder in args.folders))
        return 0
    kind = inspect_folder(args.source).kind
    if kind == "upvla":
        missing = [f"--{name}" for name in ("vq", "clip", "tokenizer") if getattr(args, name) is None]
        if missing:
            parser.error(f"converting an UP-VLA checkpoint needs {', '.join(missing)}")
        out = convert_release(args.source, args.out, vq=args.vq, clip=args.clip, tokenizer=args.tokenizer,
                              showo=args.showo, max_text_len=args.max_text_len, progress=not args.no_progress)
        print(f"wrote {out}: evaluate it with  python -m workflows.evaluate --checkpoint {out}")
    elif kind == "magvitv2":
        out = convert_magvitv2(args.source, args.out, image_size=args.image_size)
        print(f"wrote {out} (our VQ folder)")
    else:
        print(inspect_folder(args.source).format())
        print(f"{args.source} needs no conversion: it loads as it is (see above)")
        return 2
    return 0


def _check(args: argparse.Namespace) -> int:
    """One line per folder key: ok, missing (with its download command), null (random init) or wrong."""
    cfg = config_from_args(args)
    failed = 0
    for key in FOLDER_KEYS:
        section, name = key.split(".")
        folder = getattr(getattr(cfg, section), name)
        unused = {"model.backbone_path": "llm", "model.llm_path": "unified"}.get(key)
        if folder is not None and unused == cfg.model.backbone_init:
            print(f"  unused   {key}: {folder} (model.backbone_init is {unused})")
            continue
        if folder is None:
            print(f"  null     {key}: none (model.* random init / fitted by the tokenizer stage)")
            continue
        try:
            report = check_folder(key, folder, cfg.model)
            print(f"  ok       {key}: {folder} ({report.kind})")
        except FileNotFoundError as err:
            failed += 1
            repo = DOWNLOADS.get(Path(folder).name)
            hint = f"\n           download: huggingface-cli download {repo} --local-dir {folder}" if repo else ""
            print(f"  MISSING  {key}: {err}{hint}")
        except ValueError as err:
            failed += 1
            print(f"  WRONG    {key}: {err}")
    print(f"{failed} folder(s) missing or not fitting the config" if failed else "every folder fits the config")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
