#!/usr/bin/env python3
"""A non-Node CSI client: calls Identity/GetPluginInfo and Identity/Probe over a unix socket
with hand-built (empty) requests and decodes the few response fields by hand, the way a Go
client built from another proto compiler would see them on the wire.

usage: csi_probe.py unix:///path/csi.sock [authority]
prints one JSON object: {"name": ..., "vendor_version": ..., "ready": true|false|null}
"""
import json
import sys

import grpc


def varint(buf, i):
    shift = result = 0
    while True:
        b = buf[i]
        i += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, i
        shift += 7


def fields(buf):
    """(field number, wire type, value) for each top-level field; value is bytes or int."""
    i = 0
    while i < len(buf):
        key, i = varint(buf, i)
        num, wt = key >> 3, key & 7
        if wt == 0:
            v, i = varint(buf, i)
        elif wt == 2:
            n, i = varint(buf, i)
            v, i = buf[i:i + n], i + n
        else:
            raise ValueError('unexpected wire type %d' % wt)
        yield num, wt, v


def main():
    target = sys.argv[1]
    options = [('grpc.default_authority', sys.argv[2])] if len(sys.argv) > 2 else []
    with grpc.insecure_channel(target, options=options) as ch:
        call = lambda m: ch.unary_unary('/csi.v1.Identity/' + m,
                                        request_serializer=lambda _: b'',
                                        response_deserializer=lambda b: b)(None, timeout=10)
        out = {'name': None, 'vendor_version': None, 'ready': None}
        for num, _, v in fields(call('GetPluginInfo')):
            if num == 1:
                out['name'] = v.decode()
            elif num == 2:
                out['vendor_version'] = v.decode()
        for num, _, v in fields(call('Probe')):
            if num == 1:  # google.protobuf.BoolValue: field 1 is the bool
                out['ready'] = any(n == 1 and x == 1 for n, _, x in fields(v))
                if out['ready'] is False:
                    out['ready'] = False
        print(json.dumps(out))


if __name__ == '__main__':
    main()
