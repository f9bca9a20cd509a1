"""Hostile input, table-driven: every command and every option that takes a file or a number.

Each case runs one command line and asserts: a non-zero exit through the CLI's own error
handling (the runner's exception is a SystemExit, never an escaped one), no traceback anywhere in
the output, and exactly one line on stderr (after the status lines a command legitimately
prints: "compiling ...", the demo's "[1/4] ...", click's usage hint) naming the specific reason.
No case may run the payload of a pickled object (it would create ``PWNED``), and none may leave a
checkpoint or ONNX file behind in the working directory.

``CASES`` holds the table; ``len(CASES)`` is the number of hostile cases (the files it reads
are written by ``hostile_files.make_files``)."""
import pytest
from click.testing import CliRunner
from hostile_files import make_files

from mcgraph.cli import main

STATUS = ("compiling ...", "Usage: ", "Try '")          # legitimate lines before the error


def _run(argv):
    return CliRunner().invoke(main, argv)


def assert_one_line_error(r, reason):
    """Non-zero exit, a SystemExit (not an escaped exception), no traceback, and exactly one
    non-status line on stderr, an error line containing every fragment of ``reason``."""
    assert r.exit_code != 0, (r.exit_code, r.output)
    assert isinstance(r.exception, SystemExit), f"escaped exception: {r.exception!r}\n{r.output}"
    assert "Traceback" not in r.output, r.output
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    body = [ln for ln in lines if not (ln.startswith(STATUS) or ln[:1] == "[" and "/" in ln[:6])]
    assert len(body) == 1, f"expected one error line, got {len(body)}:\n{r.stderr}"
    assert body[0].startswith(("error: ", "Error: ")), r.stderr
    assert lines[-1] == body[0], f"status after the error:\n{r.stderr}"
    fragments = (reason,) if isinstance(reason, str) else reason
    missing = [f for f in fragments if f not in body[0]]
    assert not missing, f"{missing} not in: {body[0]}"


@pytest.fixture(scope="module")
def F(tmp_path_factory):
    return make_files(tmp_path_factory.mktemp("hostile"))


# ------------------------------------------------------------------ the table
def case(id, argv, reason, xfail=None):
    marks = [pytest.mark.xfail(strict=True, reason=xfail)] if xfail else []
    return pytest.param(argv, reason, id=id, marks=marks)


NOT_CKPT = "not an mcgraph checkpoint"
CKPTS = [  # (id, file, reason): every option that reads a checkpoint gets each
    ("missing", "{F}/nothere.pt", "does not exist"),
    ("empty", "{F}/empty.pt", NOT_CKPT),
    ("text", "{F}/notes.txt", NOT_CKPT),
    ("truncated", "{F}/trunc.pt", (NOT_CKPT, "unreadable")),
    ("pickle-payload", "{F}/evil.pt", (NOT_CKPT, "unreadable")),
    ("other-model", "{F}/other.pt", ("does not describe a loadable model", "size mismatch")),
    ("version-0", "{F}/v0.pt", ("checkpoint version 0", "reads versions 1, 2")),
    ("version-99", "{F}/v99.pt", ("checkpoint version 99", "reads versions 1, 2")),
    ("bare-state-dict", "{F}/raw_sd.pt", (NOT_CKPT, "no mcgraph header")),
    ("user-model", "{F}/user.pt", "holds a user model; pass model="),
    ("missing-key", "{F}/nokey.pt", ("does not describe a loadable model", "fan_in")),
    ("negative-shape", "{F}/badshape.pt", ("does not describe a loadable model", "non-negative")),
    ("untrusted-module-source", "{F}/os_src.pt", ("module source os:system", "--trust-code")),
    ("untrusted-file-source", "{F}/src.pt", ("file source", "net.py", "--trust-code")),
]
SRC_RAISES = ("importing", "net.py failed", "boom at import")
IS_DIR = "is a directory"
TRAIN = "train {} --data synthetic --epochs 1 --no-progress --out run"
SYN = "--data synthetic"
REWRITE = "rewrite resnet20 -k 1 --in-channels 1 --input-size 8x8 -o m.pt"


def _ckpt_cases(cmd, tag):
    return [case(f"{tag}-{i}", cmd.format(path), reason,
                 None) for i, path, reason in CKPTS]


SOURCES = [  # (id, model source, reason): rewrite and train build each
    ("import-raises", "{F}/boom.py:make", ("importing", "boom.py failed", "boom at import")),
    ("import-exits", "{F}/exits.py:make", ("importing", "exits.py", "SystemExit")),
    ("syntax-error", "{F}/syntax.py:make", ("syntax.py failed", "SyntaxError")),
    ("factory-raises", "{F}/factory_raises.py:make",
     ("make() raised ValueError", "factory says no")),
    ("factory-exits", "{F}/factory_exits.py:make", ("make() raised SystemExit",)),
    ("no-factory", "{F}/empty.py:make", "'make' is not defined"),
    ("returns-int", "{F}/returns_int.py:make", "returned int, not a torch.nn.Module"),
    ("missing-file", "{F}/nothere.py:make", "nothere.py does not exist"),
    ("dir-as-file", "{F}/dir.py:make", "dir.py is not a file"),
    ("no-colon", "{F}/boom.py", "names its factory"),
    ("forward-raises", "{F}/forward_raises.py:make", "forward says no"),
]
DATA = [  # (id, data options, reason): eval, train, compile and demo read each
    ("unknown-name", "--data nosuch", "unknown dataset 'nosuch'"),
    ("imagefolder-missing", "--data imagefolder:{F}/nothere", "must contain train/ and val/"),
    ("imagefolder-file", "--data imagefolder:{F}/notes.txt", "must contain train/ and val/"),
    ("imagefolder-no-classes", "--data imagefolder:{F}/if_noclass",
     ("imagefolder", "class folder")),
    ("fmnist-dir-missing", "--data fashion-mnist --data-dir {F}/nothere", "not found in"),
    ("fmnist-dir-is-file", "--data fashion-mnist --data-dir {F}/notes.txt", "not found in"),
    ("fmnist-truncated", "--data fashion-mnist --data-dir {F}/fm_trunc", "truncated or corrupt"),
    ("cifar-dir-empty", "--data cifar10 --data-dir {F}/adir", "test_batch not found"),
    ("cifar-pickle-payload", "--data cifar10 --data-dir {F}/cifar_evil",
     ("truncated or corrupt", "UnpicklingError")),
]

CASES = [
    # ---- rewrite: MODEL sources, --weights, -o, numbers
    *[case(f"rewrite-source-{i}", f"rewrite {src} -k 1 --input-size 8x8 -o m.pt", reason)
      for i, src, reason in SOURCES],
    case("rewrite-explain-import-raises", "rewrite {F}/boom.py:make --explain", "boom at import"),
    case("rewrite-unknown-name", "rewrite resnet21 -k 1 -o m.pt", "unknown model 'resnet21'"),
    case("rewrite-weights-missing", f"{REWRITE} --weights {{F}}/nothere.pt", "does not exist"),
    case("rewrite-weights-dir", f"{REWRITE} --weights {{F}}/adir", IS_DIR),
    case("rewrite-weights-empty", f"{REWRITE} --weights {{F}}/empty.pt",
         "not a loadable state_dict"),
    case("rewrite-weights-text", f"{REWRITE} --weights {{F}}/notes.txt",
         "not a loadable state_dict"),
    case("rewrite-weights-truncated", f"{REWRITE} --weights {{F}}/trunc.pt",
         "not a loadable state_dict"),
    case("rewrite-weights-pickle-payload", f"{REWRITE} --weights {{F}}/evil_sd.pt",
         "not a loadable state_dict"),
    case("rewrite-weights-other-model", f"{REWRITE} --weights {{F}}/wrong_sd.pt",
         ("does not fit resnet20", "size mismatch")),
    case("rewrite-weights-not-a-dict", f"{REWRITE} --weights {{F}}/list_sd.pt",
         ("list_sd.pt", "not a state_dict")),
    case("rewrite-out-missing-dir", "rewrite resnet20 -k 1 --input-size 8x8 -o no/m.pt",
         ("output directory no", "does not exist")),
    case("rewrite-out-is-dir", "rewrite resnet20 -k 1 --input-size 8x8 -o {F}/adir", IS_DIR),
    case("rewrite-fan-in-0", "rewrite resnet20 -k 0 -o m.pt", ("--fan-in", ">= 1", "got 0")),
    case("rewrite-fan-in-negative", "rewrite resnet20 -k -3 -o m.pt", ("--fan-in", "got -3")),
    case("rewrite-fan-in-huge", "rewrite resnet20 -k 1000000 --input-size 8x8 -o m.pt",
         "larger than the candidates"),
    case("rewrite-classes-0", "rewrite resnet20 -k 1 --num-classes 0 -o m.pt", "must be >= 1"),
    case("rewrite-channels-negative", "rewrite resnet20 -k 1 --in-channels -1 -o m.pt",
         ("--in-channels", "must be >= 1")),
    case("rewrite-size-0", "rewrite resnet20 -k 1 --input-size 0x8 -o m.pt",
         "sizes must be positive"),
    case("rewrite-size-huge", "rewrite resnet20 -k 1 --input-size 99999x99999 -o m.pt",
         ("--input-size", "at most 16384", "99999x99999")),
    case("rewrite-model-arg-bad", f"{REWRITE} --model-arg width", "key=value"),
    # ---- compile: the checkpoint, -o, --report, numbers, --data
    *_ckpt_cases("compile {} -o m.onnx", "compile-ckpt"),
    case("compile-ckpt-dir", "compile {F}/adir -o m.onnx", IS_DIR),
    # ---- results that would mislead: refused in one line
    case("compile-masks-still-learning", "compile {F}/learning.pt -o m.onnx",
         ("masks were still learning", "--data to freeze")),
    case("compile-untrained-tie", "compile {F}/uniform.pt -o m.onnx",
         ("is a tie", "--init prev")),
    case("train-out-holds-a-run", "train resnet20 --data synthetic --epochs 1 --no-progress "
         "--out {F}/run_done", ("already holds a run", "--resume", "--overwrite")),
    case("train-resume-and-overwrite", "train resnet20 --resume --overwrite --out run",
         ("--overwrite", "not both")),
    case("train-ckpt-other-fan-in", "train {F}/k2.pt --data synthetic -k 3 --epochs 1 "
         "--no-progress --out run", ("--fan-in 3 cannot apply", "rewritten with fan_in 2")),
    case("train-ckpt-other-aggregate", "train {F}/k2.pt --data synthetic --aggregate sum "
         "--epochs 1 --no-progress --out run", ("--aggregate 'sum' cannot apply", "'mean'")),
    case("eval-onnx-other-class-count", "eval {F}/r20_rgb32.onnx --data imagefolder:{F}/if3",
         ("10 classes", "has 3")),
    case("compile-data-other-input", "compile {F}/good.pt -o m.onnx --data imagefolder:{F}/if3",
         "inputs"),
    case("compile-ckpt-trusted-source-raises", "compile {F}/src.pt --trust-code -o m.onnx",
         SRC_RAISES),
    case("compile-out-missing-dir", "compile {F}/good.pt -o no/m.onnx",
         ("output directory no", "does not exist")),
    case("compile-out-is-dir", "compile {F}/good.pt -o {F}/adir", IS_DIR),
    case("compile-report-missing-dir", "compile {F}/good.pt -o m.onnx --report no/r.json",
         ("output directory no", "does not exist")),
    case("compile-report-is-dir", "compile {F}/good.pt -o m.onnx --report {F}/adir", IS_DIR),
    case("compile-opset-low", "compile {F}/good.pt -o m.onnx --opset 5",
         ("--opset", ">= 18", "got 5")),
    case("compile-opset-huge", "compile {F}/good.pt -o m.onnx --opset 100000",
         ("--opset", "at most", "100000")),
    case("compile-calib-images-0", f"compile {{F}}/good.pt -o m.onnx --precision int8 {SYN} "
         "--calib-images 0", ("--calib-images", ">= 1")),
    case("compile-eval-images-negative", f"compile {{F}}/good.pt -o m.onnx {SYN} --eval-images -2",
         ("--eval-images", ">= 1")),
    case("compile-int8-without-data", "compile {F}/good.pt -o m.onnx --precision int8",
         ("--precision int8", "--data")),
    case("compile-data-wrong-shape", "compile {F}/good.pt -o m.onnx --data imagefolder:{F}/if_ok",
         ("expects inputs [1, 16, 16]", "[3, 32, 32]")),
    *[case(f"compile-data-{i}", f"compile {{F}}/good.pt -o m.onnx {opts}", reason)
      for i, opts, reason in DATA],
    # ---- inspect: the checkpoint, --png
    *_ckpt_cases("inspect {}", "inspect-ckpt"),
    case("inspect-ckpt-dir", "inspect {F}/adir", IS_DIR),
    case("inspect-ckpt-trusted-source-raises", "inspect {F}/src.pt --trust-code", SRC_RAISES),
    case("inspect-png-missing-dir", "inspect {F}/good.pt --png no/p.png",
         ("output directory no", "does not exist")),
    case("inspect-png-is-dir", "inspect {F}/good.pt --png {F}/adir", IS_DIR),
    # ---- eval: checkpoints, ONNX files, --data, numbers
    *_ckpt_cases(f"eval {{}} {SYN}", "eval-ckpt"),
    case("eval-ckpt-dir", f"eval {{F}}/adir {SYN}", IS_DIR),
    case("eval-ckpt-trusted-source-raises", f"eval {{F}}/src.pt --trust-code {SYN}", SRC_RAISES),
    case("eval-ckpt-wrong-data", "eval {F}/good.pt --data imagefolder:{F}/if_ok",
         ("expects inputs [1, 16, 16]", "[3, 32, 32]")),
    case("eval-onnx-text", f"eval {{F}}/notes.onnx {SYN}", "not a runnable ONNX model"),
    case("eval-onnx-empty", f"eval {{F}}/empty.onnx {SYN}", "not a runnable ONNX model"),
    case("eval-onnx-truncated", f"eval {{F}}/trunc.onnx {SYN}", "not a runnable ONNX model"),
    case("eval-onnx-is-checkpoint", f"eval {{F}}/ckpt.onnx {SYN}", "not a runnable ONNX model"),
    case("eval-onnx-missing", f"eval {{F}}/nothere.onnx {SYN}", "does not exist"),
    case("eval-onnx-wrong-channels", f"eval {{F}}/rgb.onnx {SYN}",
         ("expects inputs [3, 16, 16]", "synthetic has [1, 16, 16]")),
    case("eval-onnx-wrong-rank", f"eval {{F}}/flat.onnx {SYN}", ("expects inputs", "[1, 16, 16]")),
    case("eval-imagefolder-corrupt-image", "eval {F}/rgb32.onnx --data imagefolder:{F}/if_corrupt",
         ("x.png", "cannot identify image")),
    *[case(f"eval-data-{i}", f"eval {{F}}/good.onnx {opts}", reason) for i, opts, reason in DATA],
    case("eval-batch-size-0", f"eval {{F}}/good.onnx {SYN} --batch-size 0", ("batch size", ">= 1")),
    case("eval-max-samples-0", f"eval {{F}}/good.onnx {SYN} --max-samples 0", ">= 1"),
    case("eval-max-samples-negative", f"eval {{F}}/good.pt {SYN} --max-samples -5", ">= 1"),
    # ---- bench: ONNX files, --baseline, numbers
    case("bench-missing", "bench {F}/nothere.onnx --repeats 1", "does not exist"),
    case("bench-dir", "bench {F}/adir --repeats 1", IS_DIR),
    case("bench-empty", "bench {F}/empty.onnx --repeats 1", "not a runnable ONNX model"),
    case("bench-text", "bench {F}/notes.onnx --repeats 1", "not a runnable ONNX model"),
    case("bench-truncated", "bench {F}/trunc.onnx --repeats 1", "not a runnable ONNX model"),
    case("bench-checkpoint", "bench {F}/good.pt --repeats 1", "not a runnable ONNX model"),
    case("bench-baseline-missing", "bench {F}/good.onnx --baseline {F}/nothere.onnx",
         "does not exist"),
    case("bench-baseline-dir", "bench {F}/good.onnx --baseline {F}/adir", IS_DIR),
    case("bench-baseline-text", "bench {F}/good.onnx --baseline {F}/notes.onnx",
         "not a runnable ONNX model"),
    case("bench-baseline-wrong-channels", "bench {F}/good.onnx --baseline {F}/rgb.onnx",
         "take different or unknown inputs"),
    case("bench-wrong-rank", "bench {F}/good.onnx {F}/flat.onnx",
         "take different or unknown inputs"),
    case("bench-unknown-dims", "bench {F}/dyn.onnx", "take different or unknown inputs"),
    case("bench-batch-0", "bench {F}/good.onnx --batch-sizes 0", ("batch sizes", ">= 1")),
    case("bench-batch-negative", "bench {F}/good.onnx --batch-sizes 1,-4", ("batch sizes", ">= 1")),
    case("bench-batch-text", "bench {F}/good.onnx --batch-sizes 1,x", "expected numbers like 1,64"),
    case("bench-batch-huge", "bench {F}/good.onnx --batch-sizes 1000000000000 --repeats 1 "
         "--warmup 0", "1000000000000"),
    case("bench-repeats-0", "bench {F}/good.onnx --repeats 0", "--repeats must be >= 1"),
    case("bench-warmup-negative", "bench {F}/good.onnx --warmup -1", "--warmup"),
    case("bench-threads-negative", "bench {F}/good.onnx --threads -2", "--threads"),
    # ---- train: MODEL (sources, checkpoints), --wiring-from, --resume, --out, --data, numbers
    *[case(f"train-source-{i}", TRAIN.format(src), reason) for i, src, reason in SOURCES
      if i in ("import-raises", "factory-raises", "missing-file", "forward-raises")],
    *[case(f"train-ckpt-{i}", TRAIN.format(path), reason,
           None)
      for i, path, reason in CKPTS if i != "missing"],
    case("train-ckpt-trusted-source-raises", TRAIN.format("{F}/src.pt --trust-code"), SRC_RAISES),
    case("train-ckpt-wrong-data",
         TRAIN.format("{F}/good.pt").replace(SYN, "--data imagefolder:{F}/if_ok"),
         ("rewritten for inputs [1, 16, 16]", "[3, 32, 32]")),
    *[case(f"train-wiring-from-{i}", TRAIN.format("resnet20") + f" --connectivity fixed-wiring "
           f"--wiring-from {path}", reason, None)
      for i, path, reason in CKPTS],
    case("train-wiring-from-dir", TRAIN.format("resnet20") + " --connectivity fixed-wiring "
         "--wiring-from {F}/adir", ("wiring", "adir", "does not exist")),
    case("train-wiring-from-resnet32", TRAIN.format("resnet20") + " --connectivity fixed-wiring "
         "--wiring-from {F}/r32.pt", ("--wiring-from", "r32.pt has no mask for")),
    case("train-resume-nothing",
         "train resnet20 --data synthetic --no-progress --out {F}/adir --resume",
         ("nothing to resume", "last.pt does not exist")),
    case("train-resume-truncated", "train resnet20 --no-progress --out {F}/resume_trunc --resume",
         (NOT_CKPT, "unreadable")),
    case("train-resume-pickle-payload",
         "train resnet20 --no-progress --out {F}/resume_evil --resume",
         (NOT_CKPT, "unreadable")),
    case("train-resume-no-state", "train resnet20 --no-progress --out {F}/resume_notrain --resume",
         "holds no training state"),
    case("train-resume-bad-config", "train resnet20 --no-progress --out {F}/resume_badcfg --resume",
         ("last.pt", "training state")),
    case("train-out-is-file", "train resnet20 --data synthetic --epochs 1 --no-progress "
         "--out {F}/notes.txt", ("--out", "notes.txt", "not a directory")),
    *[case(f"train-data-{i}", f"train resnet20 --epochs 1 --no-progress --out run {opts}", reason)
      for i, opts, reason in DATA],
    *[case(f"train-{flag.strip('-').split()[0]}-{tag}", TRAIN.format("resnet20") + f" {flag}",
           reason)
      for flag, tag, reason in [
          ("--epochs 0", "0", ("--epochs", ">= 1")),
          ("--batch-size -1", "negative", ("--batch-size", ">= 1")),
          ("--lr -0.1", "negative", ("--lr", ">= 0")),
          ("--mask-lr -1", "negative", ("--mask-lr", ">= 0")),
          ("--weight-decay -1", "negative", ("--weight-decay", ">= 0")),
          ("--warmup-steps -1", "negative", ("--warmup-steps", ">= 0")),
          ("--mask-grad-samples -1", "negative", ("--mask-grad-samples", ">= 0")),
          ("--freeze-at 1.5", "over-1", ("--freeze-at", "[0, 1]", "1.5")),
          ("--freeze-at -0.1", "negative", ("--freeze-at", "[0, 1]")),
          ("--val-size -1", "negative", ("--val-size", ">= 0")),
          ("--val-size 1000000000", "huge", ("1000000000", "512")),
          ("--max-steps 0", "0", ("--max-steps", ">= 1")),
          ("--max-train-samples 0", "0", ("--max-train-samples", ">= 1")),
          ("--fan-in 0", "0", ("--fan-in", ">= 1")),
          ("--fan-in 1000", "huge", "larger than the candidates"),
          ("--connectivity fixed-chain --chain-blocks 0", "0", ("--chain-blocks", ">= 1")),
          ("--connectivity fixed-chain --chain-blocks 99 -k 1", "huge",
           ("--chain-blocks", "1..9", "99")),
      ]],
    # ---- demo: numbers, --out, --data, --model
    *[case(f"demo-{flag.strip('-').split()[0]}-{tag}", f"demo --data synthetic --out d {flag}",
           reason)
      for flag, tag, reason in [
          ("--epochs 0", "0", ("--epochs", ">= 1")),
          ("--fan-in 0", "0", ("--fan-in", ">= 1")),
          ("--batch-size 0", "0", ("--batch-size", ">= 1")),
          ("--freeze-at 2", "over-1", ("--freeze-at", "[0, 1]")),
          ("--mask-lr -1", "negative", ("--mask-lr", ">= 0")),
          ("--search-epochs 0", "0", ("--search-epochs", ">= 1")),
          ("--retrain --search-samples 0", "0", ("--search-samples", ">= 1")),
          ("--max-train-samples 0", "0", ("--max-train-samples", ">= 1")),
          ("--model resnet21", "unknown", "unknown model 'resnet21'"),
          ("--model {F}/boom.py:make", "import-raises", "boom at import"),
          ("--out {F}/notes.txt", "is-file", ("--out", "notes.txt", "not a directory")),
      ]],
    *[case(f"demo-data-{i}", f"demo --out d {opts}", reason) for i, opts, reason in DATA
      if i in ("unknown-name", "imagefolder-missing", "fmnist-dir-missing",
               "cifar-pickle-payload")],
    # ---- experiment: SPEC files, --out, --render, numbers
    case("experiment-spec-missing", "experiment {F}/nothere.json --dry-run", "cannot read spec"),
    case("experiment-spec-dir", "experiment {F}/adir --dry-run", IS_DIR),
    case("experiment-spec-empty", "experiment {F}/empty.json --dry-run", "is not valid JSON"),
    case("experiment-spec-not-json", "experiment {F}/not_json.json --dry-run", "is not valid JSON"),
    case("experiment-spec-list", "experiment {F}/list.json --dry-run", "one key, 'tables'"),
    case("experiment-spec-binary", "experiment {F}/good.pt --dry-run",
         ("good.pt", "not a text file")),
    case("experiment-spec-unknown-top-key", "experiment {F}/top_key.json --dry-run",
         ("unknown key(s) 'tabels'", "allowed: 'tables'")),
    case("experiment-spec-unknown-table-key", "experiment {F}/table_key.json --dry-run",
         "unknown key(s) sedes"),
    case("experiment-spec-unknown-config-key", "experiment {F}/config_key.json --dry-run",
         "unknown key 'epoch'"),
    case("experiment-spec-unknown-recipe-key", "experiment {F}/recipe_key.json --dry-run",
         "unknown key 'learning_rate'"),
    case("experiment-spec-unknown-toml-key", "experiment {F}/unknown.toml --dry-run",
         "unknown key(s) colour"),
    case("experiment-spec-negative-seed", "experiment {F}/bad_seed.json --dry-run",
         "seeds must be a non-empty list of integers >= 0"),
    case("experiment-spec-zero-epochs", "experiment {F}/zero_epochs.json --dry-run",
         ("config c", "epochs must be >= 1")),
    case("experiment-spec-freeze-over-1", "experiment {F}/freeze.json --dry-run",
         ("config c", "freeze_at is a fraction", "[0, 1]")),
    case("experiment-seeds-0", "experiment {F}/ok.json --dry-run --seeds 0", ("--seeds", "0")),
    case("experiment-render-under-file", "experiment {F}/ok.json --no-progress --out run "
         "--render {F}/notes.txt/page.md", ("results page", "notes.txt is not a directory")),
    case("experiment-render-is-dir", "experiment {F}/ok.json --no-progress --out run "
         "--render {F}/adir", ("results page", "adir is a directory")),
    case("experiment-render-only-is-dir", "experiment {F}/ok.json --render-only --out {F}/adir "
         "--render {F}/adir", ("results page", "adir is a directory")),
    case("experiment-out-is-file", "experiment {F}/ok.json --no-progress --out {F}/notes.txt",
         ("run root", "notes.txt is not a directory")),
    case("experiment-dry-run-out-is-file", "experiment {F}/ok.json --dry-run --out {F}/notes.txt",
         ("run root", "notes.txt is not a directory")),
]


@pytest.fixture(autouse=True)
def _no_payload_ran(F):
    yield
    assert not (F / "PWNED").exists(), "a pickled payload ran"


@pytest.mark.parametrize("argv,reason", CASES)
def test_hostile_input(F, tmp_path, monkeypatch, argv, reason):
    monkeypatch.chdir(tmp_path)
    fmt = lambda s: s.replace("{F}", str(F))    # noqa: E731
    r = _run([fmt(a) for a in argv.split()])
    reason = (reason,) if isinstance(reason, str) else reason
    assert_one_line_error(r, tuple(fmt(x) for x in reason))
    left = [p.name for p in tmp_path.rglob("*") if p.suffix in (".pt", ".onnx")]
    assert not left, f"output left behind after a failure: {left}"


def test_case_count():
    print(f"{len(CASES)} hostile cases")
    assert len(CASES) >= 150
