#!/usr/bin/env python3
"""bin2c.py IN OUT NAME: write a C array NAME[] holding the bytes of IN."""
import sys

data = open(sys.argv[1], 'rb').read()
name = sys.argv[3]
with open(sys.argv[2], 'w') as out:
    out.write('/* generated from the shim image; do not edit */\n')
    out.write('#include <stdint.h>\n')
    out.write(f'const uint8_t {name}[] = {{\n')
    for i in range(0, len(data), 12):
        out.write('    ' + ', '.join(f'0x{b:02x}' for b in data[i:i + 12]) + ',\n')
    out.write('};\n')
    out.write(f'const uint64_t {name}_size = {len(data)};\n')
