"""`kefu rubric show|check|schema`: the rubric files, shown, validated, and described by a JSON schema."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.tree import Tree

from pipeline.checks.lexicons import is_lexicon_file, load_lexicons
from pipeline.cli.console import console, fail, out
from pipeline.errors import RubricError
from pipeline.paths import CHECKOUT_DIR as REPO
from pipeline.rubric.load import load_rubric, rubric_json_schema

rubric_app = typer.Typer(help="Check and show rubric files.", no_args_is_help=True)


@rubric_app.command("show")
def rubric_show(path: Annotated[Path, typer.Argument(help="Rubric YAML.")]) -> None:
    """Print the rubric as a tree with points."""
    try:
        r = load_rubric(path)
    except RubricError as exc:
        fail(exc)
        return
    tree = Tree(f"[bold]{r.name}[/bold] ({r.id} v{r.version}) — {r.total} 分")
    for d in r.dimensions:
        dn = tree.add(f"{d.name} [dim]{d.id}[/dim] — {d.points}")
        for g in d.groups:
            gn = dn.add(f"{g.name} [dim]{g.id}[/dim] — {g.points}")
            for c in g.criteria:
                cn = gn.add(f"{c.name} [dim]{c.id}[/dim] — {c.max}  (levels {'/'.join(map(str, c.points))})")
                for level in c.levels_ascending():
                    cn.add(f"{level.points}: {level.description}")
    out.print(tree)


@rubric_app.command("check")
def rubric_check(paths: Annotated[list[Path], typer.Argument(help="Rubric or lexicon YAML files.")]) -> None:
    """Validate rubric files, and lexicon files among them (rubric/*.yaml holds both); exit 1 if any has an error."""
    failed = False
    for path in paths:
        try:
            if is_lexicon_file(path):
                lex = load_lexicons(path)
                patterns = sum(len(g.entries) for g in lex.groups.values())
                out.print(f"✓ {path}: 词库 lexicons v{lex.version}, {len(lex.groups)} 组，{patterns} 条模式")
                continue
            r = load_rubric(path)
        except RubricError as exc:
            failed = True
            console.print(f"[red]✗ {escape(str(path))}[/red]")
            for problem in exc.problems:
                console.print(f"  - {escape(problem)}")
            continue
        out.print(f"✓ {path}: {r.name}，{len(r.criteria())} 个评分项，共 {r.total} 分")
    if failed:
        raise typer.Exit(1)


@rubric_app.command("schema")
def rubric_schema(
    dest: Annotated[Path, typer.Option("--out", help="Where to write it.")] = REPO / "rubric/rubric.schema.json",
) -> None:
    """Write the JSON schema of rubric files (for editors)."""
    import json

    dest.write_text(json.dumps(rubric_json_schema(), ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    out.print(str(dest))
