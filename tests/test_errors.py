"""The shared one-line argument parser: usage errors become one ``error:`` line and exit 2."""
from search_space.errors import EdgenasError, OneLineParser, cli_entry


def _main():
    @cli_entry
    def main(argv):
        p = OneLineParser(prog="python -m demo")
        p.add_argument("--epochs", type=int, required=True)
        p.add_argument("--lr", type=float)
        sub = p.add_subparsers(dest="cmd")
        sub.add_parser("go").add_argument("--n", type=int)
        p.parse_args(argv)
    return main


def test_usage_errors_are_one_line_naming_what_is_allowed(capsys):
    main = _main()
    cases = {("--epochs", "abc"): "python -m demo: argument --epochs: invalid int value: 'abc'; allowed: a whole number",
             ("--epochs", "1", "--lr", "x"): "argument --lr: invalid float value: 'x'; allowed: a number",
             (): "the following arguments are required: --epochs",
             ("--epochs", "1", "--bogus"): "unrecognized arguments: --bogus; see python -m demo --help",
             ("--epochs", "1", "go", "--n", "q"): "python -m demo go: argument --n: invalid int value"}
    for argv, want in cases.items():
        assert main(list(argv)) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and want in err and err.count("\n") == 1, (argv, err)
        assert "usage:" not in err and "Traceback" not in err


def test_error_class_can_be_narrowed():
    class MyError(EdgenasError):
        pass

    class P(OneLineParser):
        error_class = MyError

    p = P(prog="x")
    p.add_argument("--k", type=int)
    try:
        p.parse_args(["--k", "z"])
    except MyError as exc:
        assert "allowed: a whole number" in str(exc)
    else:
        raise AssertionError("no error raised")
