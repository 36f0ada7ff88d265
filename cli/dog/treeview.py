"""The ASCII tree of `dog vdi tree`, drawn as Sheepdog's treeview.c does.

A snapshot chain of one name hangs off its oldest snapshot; a child sits
under the node with its parent vid *and the same name*, so a clone (another
name) starts a tree of its own:

    Alice---[2026-11-25 21:36]-+-[2026-11-25 21:37]---(you are here)
                               `-(you are here)
"""

from __future__ import annotations

from dataclasses import dataclass, field

BOLD, NORMAL = "\033[1m", "\033[0m"


@dataclass(eq=False)
class TreeNode:
    name: str
    label: str
    vid: int
    pvid: int
    highlight: bool = False
    children: list[TreeNode] = field(default_factory=list)


class VdiTree:
    def __init__(self) -> None:
        self.root = TreeNode("", "", 0, 0)

    def _find(self, parent: TreeNode, vid: int, name: str) -> TreeNode | None:
        for child in parent.children:
            if child.vid == vid and child.name == name:
                return child
            found = self._find(child, vid, name)
            if found is not None:
                return found
        return None

    def add(self, name: str, label: str, vid: int, pvid: int, highlight: bool = False) -> None:
        parent = self._find(self.root, pvid, name) or self.root
        parent.children.append(TreeNode(name, label, vid, pvid, highlight))

    def _compact(self, parent: TreeNode) -> None:
        """Move nodes added before their parent under it."""
        for child in list(parent.children):
            new_parent = self._find(self.root, child.pvid, child.name)
            if new_parent is not None and new_parent is not parent and new_parent is not child:
                parent.children.remove(child)
                new_parent.children.append(child)
            self._compact(child)

    def render(self) -> str:
        self._compact(self.root)
        out: list[str] = []
        for top in self.root.children:
            widths = [len(top.name)]
            more = [False]
            line = [top.name]
            self._dump(top, 1, True, True, widths, more, line, out)
        return "".join(out)

    def _dump(self, node: TreeNode, level: int, first: bool, last: bool,
              widths: list[int], more: list[bool], line: list[str], out: list[str]) -> None:
        if first:
            line.append("---" if last else "-+-")
        else:
            for lvl in range(level - 1):
                line.append(" " * (widths[lvl] + 1))
                line.append("| " if more[lvl + 1] else "  ")
            line.append(" " * (widths[level - 1] + 1))
            line.append("`-" if last else "|-")
        line.append(f"{BOLD}{node.label}{NORMAL}" if node.highlight else node.label)
        if not node.children:
            out.append("".join(line) + "\n")
            line.clear()
            return
        del more[level:]
        del widths[level:]
        more.append(not last)
        widths.append(len(node.label))
        n = len(node.children)
        for i, child in enumerate(node.children):
            self._dump(child, level + 1, i == 0, i == n - 1, widths, more, line, out)
