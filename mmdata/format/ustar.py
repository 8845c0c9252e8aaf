"""Reading tar members by slicing their USTAR headers (`tarfile` costs more than the rest of decoding a record); any
other header goes through `tarfile`. Used for a record's members in our shards and for img2dataset's tars."""

from __future__ import annotations

import io
import tarfile
from collections.abc import Iterator


def tar_members(data: bytes) -> Iterator[tuple[str, bytes]]:
    """(name, bytes) of the regular files of one record's tar members. `TarSink` writes plain USTAR headers, read
    here by slicing (`tarfile` costs more than the rest of decoding); any other header goes through `tarfile`."""
    pos, end = 0, len(data)
    while pos + 512 <= end and data[pos] != 0:  # a zero block: the end-of-archive marker after a shard's last record
        kind = data[pos + 156:pos + 157]
        if kind not in (b"0", b"\0") or data[pos + 257:pos + 262] != b"ustar":
            with tarfile.open(fileobj=io.BytesIO(data[pos:]), mode="r:") as tar:
                for member in tar:
                    content = tar.extractfile(member)
                    if content is not None:
                        yield member.name, content.read()
            return
        header = data[pos:pos + 512]
        name = header[:100].split(b"\0", 1)[0].decode()
        prefix = header[345:500].split(b"\0", 1)[0]
        if prefix:
            name = f"{prefix.decode()}/{name}"
        size = int(header[124:136].split(b"\0", 1)[0].strip() or b"0", 8)
        pos += 512
        yield name, data[pos:pos + size]
        pos += -(-size // 512) * 512
