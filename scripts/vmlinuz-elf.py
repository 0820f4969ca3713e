#!/usr/bin/env python3
"""vmlinuz-elf.py VMLINUZ OUT: writes the ELF kernel inside a bzImage.

The bzImage's setup header says where its compressed payload is
(setup_sects at 0x1f1, payload_offset and payload_length at 0x248); the
payload's magic says how it is compressed, and the matching command-line
tool (xz, gzip, zstd, lz4, bzip2) unpacks it.  The result must be an ELF
file, else the script fails.
"""
import shutil
import struct
import subprocess
import sys

TOOLS = [(b"\xfd7zXZ\x00", ["xz", "-dc"]), (b"\x1f\x8b", ["gzip", "-dc"]),
         (b"\x28\xb5\x2f\xfd", ["zstd", "-dcq"]),
         (b"\x02\x21\x4c\x18", ["lz4", "-dcq"]), (b"BZh", ["bzip2", "-dc"]),
         (b"\x5d\x00\x00", ["xz", "--format=lzma", "-dc"])]


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: vmlinuz-elf.py VMLINUZ OUT")
    data = open(sys.argv[1], "rb").read()
    if len(data) < 0x250 or data[0x202:0x206] != b"HdrS":
        sys.exit(f"{sys.argv[1]}: not a bzImage (no setup header)")
    setup_sects = data[0x1F1] or 4
    off, length = struct.unpack_from("<II", data, 0x248)
    start = (setup_sects + 1) * 512 + off
    payload = data[start:start + length]
    if len(payload) != length or length == 0:
        sys.exit(f"{sys.argv[1]}: payload outside the file")
    for magic, cmd in TOOLS:
        if payload.startswith(magic):
            break
    else:
        sys.exit(f"{sys.argv[1]}: unknown compression {payload[:4].hex()}")
    if not shutil.which(cmd[0]):
        sys.exit(f"{cmd[0]} is needed to unpack the kernel")
    # Trailing bytes after the stream (the size word) make some tools
    # complain: the output is taken as long as it is an ELF file.
    res = subprocess.run(cmd, input=payload, stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL, check=False)
    elf = res.stdout
    if not elf.startswith(b"\x7fELF"):
        sys.exit(f"{sys.argv[1]}: the payload is not an ELF file")
    with open(sys.argv[2] + ".tmp", "wb") as f:
        f.write(elf)
    import os
    os.replace(sys.argv[2] + ".tmp", sys.argv[2])


if __name__ == "__main__":
    main()
