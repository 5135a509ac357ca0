"""``skyctl completion bash|zsh|fish``: shell completion scripts.

The scripts are plain text written from the command tree (every command, its
options, which option takes a value and what completes it), so a new option
completes without a change here. Host and group names come from the config
at completion time: the script runs ``skyctl hosts --names`` (with the
``--config`` already on the command line). Nothing here is imported unless
``skyctl completion`` runs: completion costs the start-up of no other command.

What completes:

- the commands; each command's options (after ``-``);
- ``--host``/``-H`` and ``check``'s arguments: profile and group names, also
  after a comma (``-H box-1,bo<TAB>``);
- ``--config``/``-c``, and ``run``/``pipe``'s TARGET: file names;
- an option with fixed choices (``--output``, ``--format``, ...): its choices.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

__all__ = ["SHELLS", "Spec", "command_spec", "script"]

SHELLS = ("bash", "zsh", "fish")

#: options whose value is a host or group name (or a comma list of them)
_HOST_OPTIONS = frozenset({"--host", "-H"})
#: options whose value is a file
_FILE_OPTIONS = frozenset({"--config", "-c"})


@dataclass
class Option:
    """One option of a command, as completion sees it."""

    names: tuple[str, ...]
    #: takes a value (not a flag)
    value: bool
    #: "host", "file", "choice" or "" (a value nothing completes, e.g. a number)
    completes: str = ""
    choices: tuple[str, ...] = ()
    help: str = ""


@dataclass
class Command:
    name: str
    help: str = ""
    options: list[Option] = field(default_factory=list)
    #: what a positional argument completes: "host", "file", "choice" or ""
    arguments: str = ""
    choices: tuple[str, ...] = ()


@dataclass
class Spec:
    """The command tree: the root's own options and every command."""

    root_options: list[Option]
    commands: list[Command]


def _first_line(text: str | None) -> str:
    return (text or "").strip().split("\n")[0].split(". ")[0].rstrip(".;,")


def _option(param: Any) -> Option:
    names = tuple([*param.opts, *getattr(param, "secondary_opts", ())])
    # ``--progress[=SECONDS]``: its value is never a separate word, so the next word is not its value
    optional_value = str(getattr(param, "metavar", "") or "").startswith("[=")
    value = not getattr(param, "is_flag", False) and not getattr(param, "count", False) and not optional_value
    choices = tuple(str(c) for c in getattr(param.type, "choices", ()) or ())
    completes = ""
    if value:
        if set(names) & _HOST_OPTIONS:
            completes = "host"
        elif set(names) & _FILE_OPTIONS:
            completes = "file"
        elif choices:
            completes = "choice"
    return Option(names, value, completes, choices, _first_line(getattr(param, "help", "")))


def command_spec(root: Any) -> Spec:
    """The ``Spec`` of a click group (what ``typer.main.get_command(app)`` gives)."""
    root_options = [_option(p) for p in root.params if p.param_type_name == "option" and not getattr(p, "hidden", False)]
    root_options.append(Option(("--help", "-h"), False, help="Show the help"))
    commands: list[Command] = []
    for name, cmd in root.commands.items():
        if getattr(cmd, "hidden", False):
            continue
        command = Command(name, _first_line(cmd.help))
        for param in cmd.params:
            if getattr(param, "hidden", False):
                continue
            if param.param_type_name == "option":
                command.options.append(_option(param))
                continue
            choices = tuple(str(c) for c in getattr(param.type, "choices", ()) or ())
            if choices:
                command.arguments, command.choices = "choice", choices
            elif name == "check":
                command.arguments = "host"
            elif name in ("run", "pipe"):
                command.arguments = "file"
        command.options.append(Option(("--help", "-h"), False, help="Show the help"))
        commands.append(command)
    return Spec(root_options, commands)


def script(shell: str, spec: Spec, prog: str = "skyctl") -> str:
    """The completion script for ``shell`` (one of ``SHELLS``)."""
    return {"bash": _bash, "zsh": _zsh, "fish": _fish}[shell](spec, prog)


# -- bash and zsh share the shape: a case over "COMMAND:PREVIOUS-WORD" ----------------------


def _words(items: Any) -> str:
    return " ".join(items)


def _value_arms(spec: Spec, host: str, file: str, choice: str, other: str) -> list[str]:
    """``case`` arms (bash/zsh syntax) for an option's value; each body given as a template."""
    arms: list[str] = []
    for command in spec.commands:
        for option in command.options:
            if not option.value:
                continue
            pattern = "|".join(f"{command.name}:{name}" for name in option.names)
            if option.completes == "host":
                body = host
            elif option.completes == "file":
                body = file
            elif option.completes == "choice":
                body = choice.replace("{choices}", _words(option.choices))
            else:
                body = other
            arms.append(f"        {pattern}) {body} ;;")
    return arms


def _by_kind(kind: str | None, choices: Any, host: str, file: str, choice: Callable[[Any], str]) -> str | None:
    """In one shell's words, what completes a value of ``kind`` (host, file, choice); None for nothing."""
    if kind == "host":
        return host
    if kind == "file":
        return file
    if kind == "choice":
        return choice(choices)
    return None


def _positional_arms(spec: Spec, host: str, file: str, choice: str) -> list[str]:
    arms = []
    for command in spec.commands:
        what = _by_kind(command.arguments, command.choices, host, file,
                        lambda choices: choice.replace("{choices}", _words(choices)))
        if what is not None:
            arms.append(f"        {command.name}) {what} ;;")
    return arms


def _option_arms(spec: Spec, body: str) -> list[str]:
    return [f"            {c.name}) {body.replace('{options}', _words(n for o in c.options for n in o.names))} ;;"
            for c in spec.commands]


def _top_words(spec: Spec) -> str:
    """What completes right after ``skyctl``: the commands and the root options."""
    return _words([*(c.name for c in spec.commands), *(n for o in spec.root_options for n in o.names)])


def _dispatch(spec: Spec, cmd_word: str, ret: str, host: str, file: str, choice: str, option_body: str) -> list[str]:
    """The body both shells share: a value after an option, an option name, a positional argument."""
    return [
        f"    local cmd=\"{cmd_word}\"",
        "    case \"$cmd:$prev\" in",
        *_value_arms(spec, f"{host}; {ret}", f"{file}; {ret}", f"{choice}; {ret}", ret),
        "    esac",
        "    if [[ $cur == -* ]]; then",
        "        case \"$cmd\" in",
        *_option_arms(spec, option_body),
        "        esac",
        f"        {ret}",
        "    fi",
        "    case \"$cmd\" in",
        *_positional_arms(spec, host, file, choice),
        "    esac",
    ]


def _bash(spec: Spec, prog: str) -> str:
    lines = [
        f"# {prog} completion for bash. Load it with:  eval \"$({prog} completion bash)\"  (e.g. in ~/.bashrc)",
        "_skyctl_hosts() {",
        "    local i cfg=()",
        "    for ((i = 1; i < COMP_CWORD; i++)); do",
        "        case \"${COMP_WORDS[i]}\" in",
        "            -c|--config) cfg=(--config \"${COMP_WORDS[i+1]}\") ;;",
        "            --config=*) cfg=(--config \"${COMP_WORDS[i]#--config=}\") ;;",
        "        esac",
        "    done",
        "    \"${COMP_WORDS[0]}\" hosts --names \"${cfg[@]}\" 2>/dev/null",
        "}",
        "_skyctl_reply_hosts() {",
        "    local prefix=\"\" word=\"$cur\"",
        "    if [[ $cur == *,* ]]; then prefix=\"${cur%,*},\"; word=\"${cur##*,}\"; fi",
        "    COMPREPLY=($(compgen -P \"$prefix\" -W \"$(_skyctl_hosts)\" -- \"$word\"))",
        "}",
        "_skyctl() {",
        "    local cur=\"${COMP_WORDS[COMP_CWORD]}\" prev=\"${COMP_WORDS[COMP_CWORD-1]}\"",
        "    COMPREPLY=()",
        "    if [[ $COMP_CWORD -eq 1 ]]; then",
        f"        COMPREPLY=($(compgen -W \"{_top_words(spec)}\" -- \"$cur\"))",
        "        return 0",
        "    fi",
        *_dispatch(spec, "${COMP_WORDS[1]}", "return 0", host="_skyctl_reply_hosts",
                   file="COMPREPLY=($(compgen -f -- \"$cur\"))",
                   choice="COMPREPLY=($(compgen -W \"{choices}\" -- \"$cur\"))",
                   option_body="COMPREPLY=($(compgen -W \"{options}\" -- \"$cur\"))"),
        "    return 0",
        "}",
        f"complete -o default -F _skyctl {prog}",
    ]
    return "\n".join(lines) + "\n"


def _zsh(spec: Spec, prog: str) -> str:
    lines = [
        f"#compdef {prog}",
        f"# {prog} completion for zsh. Load it with:  eval \"$({prog} completion zsh)\"  (in ~/.zshrc, after compinit),",
        f"# or save it as _{prog} in a directory of $fpath.",
        "_skyctl_add_hosts() {",
        "    local i",
        "    local -a cfg names",
        "    for ((i = 2; i < CURRENT; i++)); do",
        "        case \"${words[i]}\" in",
        "            -c|--config) cfg=(--config \"${words[i+1]}\") ;;",
        "            --config=*) cfg=(--config \"${words[i]#--config=}\") ;;",
        "        esac",
        "    done",
        "    names=(${(f)\"$(${words[1]} hosts --names $cfg 2>/dev/null)\"})",
        "    names=(${names:#})",
        "    compset -P '*,'",
        "    compadd -- $names",
        "}",
        "_skyctl() {",
        "    local cur=\"${words[CURRENT]}\" prev=\"${words[CURRENT-1]}\"",
        "    if (( CURRENT == 2 )); then",
        f"        compadd -- {_top_words(spec)}",
        "        return",
        "    fi",
        *_dispatch(spec, "${words[2]}", "return", host="_skyctl_add_hosts", file="_files",
                   choice="compadd -- {choices}", option_body="compadd -- {options}"),
        "}",
        f"if [[ \"${{funcstack[1]}}\" == _{prog} ]]; then",
        "    _skyctl \"$@\"",
        "else",
        f"    compdef _skyctl {prog}",
        "fi",
    ]
    return "\n".join(lines) + "\n"


def _fish_quote(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _fish(spec: Spec, prog: str) -> str:
    lines = [
        f"# {prog} completion for fish. Load it with:  {prog} completion fish | source",
        f"# or save it as ~/.config/fish/completions/{prog}.fish",
        "function __skyctl_hosts",
        "    set -l tokens (commandline -opc)",
        "    set -l cfg",
        "    set -l count (count $tokens)",
        "    for i in (seq $count)",
        "        switch $tokens[$i]",
        "            case -c --config",
        "                if test $i -lt $count",
        "                    set cfg --config $tokens[(math $i + 1)]",
        "                end",
        "            case '--config=*'",
        "                set cfg --config (string replace -- '--config=' '' $tokens[$i])",
        "        end",
        "    end",
        "    set -l prefix ''",
        "    if string match -q -- '*,*' (commandline -ct)",
        "        set prefix (string match -r -- '^.*,' (commandline -ct))",
        "    end",
        "    for name in ($tokens[1] hosts --names $cfg 2>/dev/null)",
        "        echo $prefix$name",
        "    end",
        "end",
        f"complete -c {prog} -f",
    ]
    for option in spec.root_options:
        lines.append(f"complete -c {prog} -n __fish_use_subcommand {_fish_names(option)} -d {_fish_quote(option.help)}")
    for command in spec.commands:
        lines.append(f"complete -c {prog} -n __fish_use_subcommand -a {command.name} -d {_fish_quote(command.help)}")
    for command in spec.commands:
        when = f"-n '__fish_seen_subcommand_from {command.name}'"
        for option in command.options:
            what = ""
            if option.completes == "host":
                what = " -x -a '(__skyctl_hosts)'"
            elif option.completes == "file":
                what = " -r -F"
            elif option.completes == "choice":
                what = f" -x -a {_fish_quote(_words(option.choices))}"
            elif option.value:
                what = " -x"
            lines.append(f"complete -c {prog} {when} {_fish_names(option)}{what} -d {_fish_quote(option.help)}")
        what = _by_kind(command.arguments, command.choices, "-a '(__skyctl_hosts)'", "-F",
                        lambda choices: f"-a {_fish_quote(_words(choices))}")
        if what is not None:
            lines.append(f"complete -c {prog} {when} {what}")
    return "\n".join(lines) + "\n"


def _fish_names(option: Option) -> str:
    parts = []
    for name in option.names:
        if name.startswith("--"):
            parts.append(f"-l {name[2:]}")
        elif name.startswith("-") and len(name) == 2:
            parts.append(f"-s {name[1:]}")
        else:
            parts.append(f"-o {name[1:]}")
    return " ".join(parts)
