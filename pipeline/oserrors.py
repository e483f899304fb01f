"""Why a file could not be read, in words a QA lead reads: never Python's `[Errno 2] …` or codec text."""

from __future__ import annotations

import errno

_WORDS = {
    errno.ENOENT: "不存在 (not found)",
    errno.EACCES: "没有权限 (permission denied)",
    errno.EPERM: "没有权限 (permission denied)",
    errno.EISDIR: "是文件夹，不是文件 (a folder, not a file)",
    errno.ENOTDIR: "路径中有一段不是文件夹 (a part of the path is not a folder)",
    errno.ENOSPC: "磁盘已满 (the disk is full)",
    errno.EROFS: "在只读的文件系统上 (a read-only file system)",
    errno.EEXIST: "已存在 (already exists)",
    errno.ENAMETOOLONG: "路径太长 (the path is too long)",
    errno.ELOOP: "路径中的链接循环指向自己 (a link in the path loops back on itself)",
}


def os_problem(exc: OSError) -> str:
    """Chinese first for the common refusals; the system's own words, without the errno, for a rarer one."""
    if exc.errno in _WORDS:
        return _WORDS[exc.errno]
    return exc.strerror or type(exc).__name__


def utf8_problem(exc: UnicodeDecodeError) -> str:
    """A settings, rubric, lexicon or id file that is not UTF-8 (saved as GBK, most often): where, and the fix."""
    return (f"不是 UTF-8 文本：第 {exc.start + 1} 个字节无法解码，请另存为 UTF-8 "
            f"(not UTF-8 text: byte {exc.start + 1} cannot be decoded; save it as UTF-8)")
