"""A question's MALT tree for the terminal: every node's answer, reward or value and label."""

from __future__ import annotations

from rich.tree import Tree

from malt_lake.errors import MaltLakeError
from malt_lake.lake import Lake
from malt_lake.query import fetch


def load_tree(lake: Lake, question_id: str) -> tuple[dict, list[dict]]:
    params = {"question_id": question_id}
    question = fetch(lake, "inspect/question", params).to_pylist()
    if not question:
        raise MaltLakeError(f"no question {question_id!r} in the lake; list some with "
                            "`malt-lake sql \"select question_id from questions limit 10\"`")
    nodes = fetch(lake, "inspect/tree", params, derived=True).to_pylist()
    return question[0], nodes


def render_tree(question: dict, nodes: list[dict], width: int = 70) -> Tree:
    root = Tree(f"[bold]{question['question_id']}[/bold]  {question['question']}\n"
                f"ground truth: [bold]{question['answer']}[/bold]")
    if not nodes:
        root.add("[dim]not expanded yet: materialize generations, critiques, refinements[/dim]")
        return root
    children: dict[str, list[dict]] = {}
    for node in nodes:
        children.setdefault(node["parent_id"], []).append(node)

    def add(branch: Tree, parent_id: str) -> None:
        for node in children.get(parent_id, []):
            add(branch.add(_label(node, width)), node["node_id"])

    add(root, question["question_id"])
    return root


def _label(node: dict, width: int) -> str:
    role = {"generator": "G", "verifier": "V", "refiner": "R"}[node["role"]]
    text = " ".join((node["text"] or node["error"] or "").split())
    text = text if len(text) <= width else text[: width - 1] + "…"
    parts = [f"[bold]{role}[/bold] {node['node_id'].split('/')[-1]}"]
    if node["pred_answer"] is not None or node["role"] != "verifier":
        parts.append(f"answer={node['pred_answer'] if node['parse_ok'] else '∅'}")
    if node["reward"] is not None:
        parts.append(f"reward={node['reward']}")
    if node["value"] is not None:
        mark = "[green]+[/green]" if node["label"] else "[red]−[/red]"
        parts.append(f"value={node['value']:.2f}{mark}")
    elif node["error"]:
        parts.append("[red]failed[/red]")
    return "  ".join(parts) + f"  [dim]{text}[/dim]"
