"""Running the CLI in-process from tests."""

from unlearnbench import cli


def invoke(capsys, *args) -> tuple[int | None, str, str]:
    """(exit code, stdout, stderr) of `unlearnbench ARGS`; 0 when the command returns normally."""
    try:
        cli.main(list(args))
        code = 0
    except SystemExit as exit_info:
        code = exit_info.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err
