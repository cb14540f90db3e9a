"""The example pipelines stay true: .github/workflows/images.yml and
.zuul.yaml (with its playbooks) parse and have the shape their engine reads,
fan out over what `profiles matrix --json` really prints, and every command
they run exists, with every option they give it, in the real command line."""
import json
import os
import re
import shlex
import subprocess
import sys

import click
import pytest
import yaml

from tests.helpers.cli import REPO, invoke
from trove_image_builder.cli import main

WORKFLOW = REPO / ".github" / "workflows" / "images.yml"
ZUUL = REPO / ".zuul.yaml"
PROGRAMS = {"trove-image-builder", "image-builder"}
# scripts that hand their arguments on: scripts/build-image PROFILE ... is `build PROFILE ...`
SCRIPT_COMMANDS = {"scripts/build-image": ["build"]}
# GitHub's ${{ ... }} and Jinja's {{ ... }} are a value; Jinja's {% ... %} is nothing
EXPRESSION = re.compile(r"\$?\{\{.*?\}\}", re.S)
STATEMENT = re.compile(r"\{%.*?%\}", re.S)
SHELL_OPERATORS = set(";&|<>()")
COMMAND_MODULES = {"command", "shell", "ansible.builtin.command", "ansible.builtin.shell"}


# -- reading the pipelines ---------------------------------------------------

def is_program(token: str) -> bool:
    """The tool by one of its names, on the PATH or in a bin folder (.venv/bin/...)."""
    folder, name = os.path.split(token)
    return name in PROGRAMS and (folder == "" or os.path.basename(folder) == "bin")


def command_lines(script: str) -> list[list[str]]:
    """Every command line of a shell script that runs the tool or a script of
    scripts/: [program, arg, ...], the program as written; expressions are
    'VALUE', here-documents skipped."""
    text = STATEMENT.sub("", EXPRESSION.sub("VALUE", script)).replace("\\\n", " ")
    found, heredoc = [], None
    for line in text.splitlines():
        if heredoc is not None:
            heredoc = None if line.strip() == heredoc else heredoc
            continue
        marker = re.search(r"<<-?\s*['\"]?(\w+)", line)
        heredoc = marker.group(1) if marker else None
        lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        tokens = list(lexer)
        for i, token in enumerate(tokens):
            if is_program(token) or token.startswith("scripts/"):
                args = []
                for arg in tokens[i + 1:]:
                    if set(arg) <= SHELL_OPERATORS:
                        break
                    args.append(arg)
                found.append([token, *args])
    return found


def workflow() -> dict:
    return yaml.safe_load(WORKFLOW.read_text())


def workflow_scripts() -> list[str]:
    return [step["run"] for job in workflow()["jobs"].values()
            for step in job["steps"] if "run" in step]


def zuul_entries() -> list[dict]:
    return yaml.safe_load(ZUUL.read_text())


def zuul_jobs() -> dict:
    return {e["job"]["name"]: e["job"] for e in zuul_entries() if "job" in e}


def playbooks() -> list:
    """Every playbook the Zuul jobs name, as a repository path."""
    found = []
    for job in zuul_jobs().values():
        for key in ("pre-run", "run", "post-run"):
            named = job.get(key, [])
            found += [named] if isinstance(named, str) else named
    return sorted(set(found))


def tasks_of(tasks):
    """The tasks, and those inside block/rescue/always, depth first."""
    for task in tasks or []:
        yield task
        for key in ("block", "rescue", "always"):
            yield from tasks_of(task.get(key))


def playbook_scripts(path) -> list[str]:
    scripts = []
    for play in yaml.safe_load((REPO / path).read_text()):
        for part in ("pre_tasks", "tasks", "post_tasks", "handlers"):
            for task in tasks_of(play.get(part)):
                for module in COMMAND_MODULES & set(task):
                    value = task[module]
                    if isinstance(value, dict):
                        value = value.get("cmd") or shlex.join(value.get("argv", []))
                    scripts.append(value)
    return scripts


def all_command_lines() -> list[tuple[str, list[str]]]:
    lines = [(WORKFLOW.name, c) for s in workflow_scripts() for c in command_lines(s)]
    for path in playbooks():
        lines += [(path, c) for s in playbook_scripts(path) for c in command_lines(s)]
    return lines


# -- checking a command line against the real command ------------------------

def _option(command: click.Command, name: str):
    for param in command.params:
        if isinstance(param, click.Option) and name in param.opts + param.secondary_opts:
            return param
    return None


def problems_with(args: list[str]) -> list[str]:
    """What is wrong with `trove-image-builder ARGS`, read with the real
    Click group: no such command, no such option, an option without its
    value or not one of its choices, too few or too many arguments."""
    ctx = click.Context(main, info_name="trove-image-builder")
    command, path, positional, problems = main, ["trove-image-builder"], [], []
    i = 0
    while i < len(args):
        arg, i = args[i], i + 1
        where = " ".join(path)
        if arg.startswith("-") and arg != "-":
            name, eq, value = arg.partition("=")
            if name == "--help":
                continue
            option = _option(command, name)
            if option is None:
                problems.append(f"{where}: no such option {name}")
                continue
            if option.is_flag or option.count:
                continue
            if not eq:
                if i >= len(args):
                    problems.append(f"{where}: {name} needs a value")
                    continue
                value, i = args[i], i + 1
            if (isinstance(option.type, click.Choice) and "VALUE" not in value
                    and "$" not in value and value not in option.type.choices):
                problems.append(f"{where}: {name} {value!r} is not one of "
                                f"{', '.join(option.type.choices)}")
        elif isinstance(command, click.Group):
            sub = command.get_command(ctx, arg)
            if sub is None:
                return problems + [f"{where}: no such command {arg!r}"]
            command = sub
            path.append(arg)
        else:
            positional.append(arg)
    if isinstance(command, click.Group):
        return problems + [f"{' '.join(path)}: a group, not a command"]
    arguments = [p for p in command.params if isinstance(p, click.Argument)]
    least = sum(p.nargs for p in arguments if p.required and p.nargs > 0)
    most = None if any(p.nargs < 0 for p in arguments) else sum(p.nargs for p in arguments)
    if len(positional) < least or (most is not None and len(positional) > most):
        problems.append(f"{' '.join(path)}: {len(positional)} argument(s) {positional}, "
                        f"takes {least}" + ("" if most == least else f" to {most}"))
    return problems


def as_tool(line: list[str]):
    """The tool's arguments a command line amounts to, or None (a plain script)."""
    program, *args = line
    if is_program(program):
        return args
    if program in SCRIPT_COMMANDS and args:
        return SCRIPT_COMMANDS[program] + args
    return None


def subcommands(lines) -> set:
    """The command paths a list of command lines runs: {'build', 'profiles matrix', ...}."""
    found = set()
    for _, line in lines:
        args = as_tool(line)
        if args:
            words = [a for a in args if not a.startswith("-")]
            found.add(" ".join(words[:2]) if words[0] in main.commands and isinstance(
                main.commands[words[0]], click.Group) else words[0])
    return found


# -- the checker itself can fail ----------------------------------------------

T = "trove-image-builder"


@pytest.mark.parametrize("line, problem", [
    ("sudo -E .venv/bin/trove-image-builder publsh X --os-cloud c | tee x",
     f"{T}: no such command 'publsh'"),
    ("trove-image-builder publish out/x.qcow2 --cloud c", f"{T} publish: no such option --cloud"),
    ("image-builder verify out/x.qcow2 --bogus", f"{T} verify: no such option --bogus"),
    ("trove-image-builder build", f"{T} build: 0 argument(s) [], takes 1"),
    ("trove-image-builder build a b", f"{T} build: 2 argument(s) ['a', 'b'], takes 1"),
    ("trove-image-builder check --backend nope",
     f"{T} check: --backend 'nope' is not one of dib, virt-customize"),
    ("trove-image-builder profiles", f"{T} profiles: a group, not a command"),
    ("scripts/build-image prod-mariadb --out x", f"{T} build: no such option --out"),
])
def test_the_checker_rejects_made_up_command_lines(line, problem):
    [found] = command_lines(line)
    assert problem in problems_with(as_tool(found))


def test_command_lines_are_read_as_the_shell_reads_them():
    script = ("mkdir -p out\n"
              "sudo -E .venv/bin/trove-image-builder build \"$P\" \\\n  -o ${{ matrix.x }} "
              "--set {{ s | quote }}{% endfor %} > log && echo ok  # trove-image-builder x\n"
              "python3 - <<'EOF'\ntrove-image-builder nonsense\nEOF\n"
              "scripts/install")
    assert command_lines(script) == [
        [".venv/bin/trove-image-builder", "build", "$P", "-o", "VALUE", "--set", "VALUE"],
        ["scripts/install"]]
    assert problems_with(["build", "$P", "-o", "VALUE", "--set", "VALUE"]) == []


# -- the pipelines --------------------------------------------------------------

def _id(item):
    where, line = item
    return f"{where}: {shlex.join(line)}"


@pytest.mark.parametrize("item", all_command_lines(), ids=_id)
def test_every_command_a_pipeline_runs_exists(item):
    where, line = item
    program = line[0]
    if program.startswith("scripts/"):
        script = REPO / program
        assert script.is_file() and os.access(script, os.X_OK), f"{where}: {program}"
    args = as_tool(line)
    if args is not None:
        assert problems_with(args) == [], where


def test_the_pipelines_run_every_stage():
    stages = {"check", "build", "verify", "sbom", "publish"}
    github = [x for x in all_command_lines() if x[0] == WORKFLOW.name]
    zuul = [x for x in all_command_lines() if x[0] != WORKFLOW.name]
    assert stages | {"profiles matrix"} <= subcommands(github)
    assert stages | {"register"} <= subcommands(zuul)
    for lines in (github, zuul):
        assert ["scripts/install"] in [line for _, line in lines]
        assert any(as_tool(line) and "--boot" in line for _, line in lines)


def test_the_workflow_has_what_github_actions_reads():
    wf = workflow()
    # PyYAML reads YAML 1.1, where the key `on` is the boolean true
    assert "on" not in wf
    triggers = wf[True]
    assert {"push", "pull_request", "workflow_dispatch"} <= set(triggers)
    assert triggers["workflow_dispatch"]["inputs"]["boot"]["type"] == "boolean"
    jobs = wf["jobs"]
    for name, job in jobs.items():
        assert job.get("runs-on") and job.get("steps"), name
        for step in job["steps"]:
            assert ("run" in step) != ("uses" in step), (name, step)


def test_the_workflow_fans_out_on_the_first_jobs_output():
    jobs = workflow()["jobs"]
    first, *others = jobs
    output, = jobs[first]["outputs"]
    step_id, = re.fullmatch(r"\$\{\{ steps\.([\w-]+)\.outputs\." + output + r" \}\}",
                            jobs[first]["outputs"][output]).groups()
    step, = [s for s in jobs[first]["steps"] if s.get("id") == step_id]
    assert f"{output}=" in step["run"] and "GITHUB_OUTPUT" in step["run"]
    assert ["profiles", "matrix", "--json"] in [as_tool(c) for c in command_lines(step["run"])]
    image = jobs[others[0]]
    assert first in ([image["needs"]] if isinstance(image["needs"], str) else image["needs"])
    assert image["strategy"]["matrix"]["profile"] == \
        f"${{{{ fromJSON(needs.{first}.outputs.{output}) }}}}"
    cache, = [s for s in image["steps"] if s.get("uses", "").startswith("actions/cache@")]
    assert cache["with"]["path"] == "~/.cache/trove-image-builder"
    assert "matrix.profile.name" in cache["with"]["key"]
    publish, = [s for s in image["steps"] if "publish" in s.get("run", "")]
    assert "default_branch" in publish["if"] and "HAVE_CLOUDS" in publish["if"]
    boot, = [s for s in image["steps"] if "--boot" in s.get("run", "")]
    assert "inputs.boot" in boot["if"]


def _matrix() -> list:
    result = invoke("profiles", "matrix", "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_the_fields_the_workflow_reads_are_in_the_matrix():
    entries = _matrix()
    used = set(re.findall(r"matrix\.profile((?:\.\w+)+)", WORKFLOW.read_text()))
    assert ".name" in used
    for path in used:
        reached = 0
        for entry in entries:
            value = entry
            for key in path.split(".")[1:]:
                if value is None:       # e.g. datastore: null; GitHub reads ''
                    break
                assert key in value, f"matrix.profile{path}: no {key!r} in {entry['name']}"
                value = value[key]
            else:
                reached += 1
        assert reached, path


def _github_fan_out(tmp_path) -> list:
    """Run the matrix job's own filter (its Python here-document) on the real
    `profiles matrix --json`: the profiles the workflow builds."""
    step, = [s for s in workflow()["jobs"]["matrix"]["steps"] if s.get("id") == "profiles"]
    program = re.search(r"<<'EOF'\n(.*?)\nEOF\n", step["run"], re.S).group(1)
    rows = tmp_path / "matrix.json"
    rows.write_text(json.dumps(_matrix()))
    done = subprocess.run([sys.executable, "-c", program, str(rows)], text=True,
                          capture_output=True, env={**os.environ, "ONLY": ""}, check=True)
    name, _, value = done.stdout.strip().partition("=")
    assert name == "profiles"
    return [p["name"] for p in json.loads(value)]


def test_zuul_has_jobs_a_project_template_and_a_project():
    entries = zuul_entries()
    assert all(len(e) == 1 and next(iter(e)) in {"job", "project-template", "project"}
               for e in entries), entries
    jobs = zuul_jobs()
    roots = [j for j in jobs.values() if j.get("parent") not in jobs]
    assert [(j["parent"], j["abstract"], bool(j["nodeset"])) for j in roots] == [
        ("base", True, True)]
    templates = {e["project-template"]["name"]: e["project-template"]
                 for e in entries if "project-template" in e}
    project, = [e["project"] for e in entries if "project" in e]
    assert set(project["templates"]) <= set(templates)
    for template in templates.values():
        for pipeline in ("check", "gate"):
            listed = template[pipeline]["jobs"]
            assert listed and set(listed) <= set(jobs), pipeline


@pytest.mark.parametrize("path", playbooks())
def test_every_zuul_playbook_exists_and_is_a_list_of_plays(path):
    plays = yaml.safe_load((REPO / path).read_text())
    assert isinstance(plays, list) and plays
    for play in plays:
        assert isinstance(play, dict) and "hosts" in play and "tasks" in play, play


def test_both_fan_out_over_the_same_shipped_profiles(tmp_path):
    entries = _matrix()
    kept = sorted(p["name"] for p in entries if p["datastore"] and p["variant"] == "production")
    assert sorted(_github_fan_out(tmp_path)) == kept
    jobs = zuul_jobs()
    template, = [e["project-template"] for e in zuul_entries() if "project-template" in e]
    for pipeline in ("check", "gate"):
        profiles = sorted(jobs[name]["vars"]["profile"] for name in template[pipeline]["jobs"])
        assert profiles == kept, pipeline
