#!/usr/bin/env python3
"""Writes the seed corpora corpus/idx and corpus/ckpt (committed; rerun to refresh).

Each input is one flags byte followed by a file (see fuzz_idx.c, fuzz_ckpt.c).
The checkpoints are kiln files of the harness's model (fuzz_ckpt.c MODEL), with the
whole-file CRC kiln writes (docs/FORMATS.md), so that mutations start from files
that pass every check."""
import gzip, json, os, struct, zlib

here = os.path.dirname(os.path.abspath(__file__))

def put(sub, name, flags, body):
    d = os.path.join(here, 'corpus', sub)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), 'wb') as f:
        f.write(bytes([flags]) + body)

# ---- IDX ----
def idx(dims, data):
    return bytes([0, 0, 8, len(dims)]) + b''.join(struct.pack('>I', d) for d in dims) + bytes(data)

img = idx([2, 2, 2], range(8))
img4 = idx([2, 1, 2, 3], range(12))
lab = idx([2], [0, 1])
lab_big = idx([2], [0, 200])
put('idx', 'images3', 0, img)
put('idx', 'images4', 0, img4)
put('idx', 'labels', 1, lab)
put('idx', 'labels_out_of_range', 1, lab_big)
put('idx', 'images3.gz', 0, gzip.compress(img, mtime=0))
put('idx', 'labels.gz', 1, gzip.compress(lab, mtime=0))
put('idx', 'two_members.gz', 0, gzip.compress(img[:10], mtime=0) + gzip.compress(img[10:], mtime=0))
put('idx', 'images_big.gz', 0, gzip.compress(idx([4, 16, 16], [(i * 37) % 251 for i in range(1024)]), mtime=0))

# ---- checkpoints ----
def st_file(tensors, meta):
    """tensors: list of (name, dtype, shape, bytes); meta: dict of str (order kept)."""
    off = 0
    entries = []
    for name, dt, shape, raw in tensors:
        entries.append((name, {'dtype': dt, 'shape': shape, 'data_offsets': [off, off + len(raw)]}))
        off += len(raw)
    data = b''.join(t[3] for t in tensors)
    def build(crc):
        h = {}
        if meta is not None:
            m = {'kiln_file_crc32': crc}
            m.update(meta)
            h['__metadata__'] = m
        for name, e in entries:
            h[name] = e
        hb = json.dumps(h, separators=(',', ':')).encode()
        hb += b' ' * ((8 - len(hb) % 8) % 8)
        return struct.pack('<Q', len(hb)) + hb + data
    if meta is None:
        return build(None)
    return build('%08x' % (zlib.crc32(build('00000000')) & 0xffffffff))

def f32(n, scale=0.01):
    return struct.pack('<%df' % n, *[scale * i for i in range(n)])

MODEL = ("[conv1]\ntype = conv2d\nout_channels = 2\nkernel = 3\npadding = 1\n"
         "[bn1]\ntype = batchnorm\nactivation = relu\n[flat]\ntype = flatten\n[fc]\ntype = linear\nout = 3\n")
params = [('conv1.weight', [2, 1, 3, 3]), ('conv1.bias', [2]), ('bn1.weight', [2]), ('bn1.bias', [2]),
          ('fc.weight', [3, 32]), ('fc.bias', [3])]
states = [('bn1.running_mean', [2]), ('bn1.running_var', [2])]
def numel(s):
    n = 1
    for d in s:
        n *= d
    return n
tens = [(n, 'F32', s, f32(numel(s))) for n, s in params + states]
moments = [('optimizer.%s.%s' % (k, n), 'F32', s, f32(numel(s), 0.001)) for n, s in params for k in ('m', 'v')]
meta = {'format': 'pt', 'kiln_crc32': '%08x' % (zlib.crc32(b''.join(t[3] for t in tens + moments)) & 0xffffffff),
        'kiln_version': '0.1.0', 'kind': 'train', 'step': '12', 'epoch': '1', 'batch_in_epoch': '2', 'seed': '7',
        'optimizer_t': '12', 'epoch_loss_sum': '0x1.8p+1', 'epoch_steps': '2', 'best_val_loss': 'inf',
        'best_step': '-1', 'metrics_bytes': '1234', 'config_hash': '0123456789abcdef', 'optimizer_kind': '1',
        'guard_lr_scale': '0x1p+0', 'guard_events': '0', 'bad_epochs': '0', 'data_mean': '0x1p-2',
        'data_std': '0x1p-1', 'algorithms': 'conv1=direct', 'config': MODEL}
put('ckpt', 'train', 3, st_file(tens + moments, meta))
put('ckpt', 'train_inspect', 1, st_file(tens + moments, meta))
mmeta = {'format': 'pt', 'kiln_version': '0.1.0', 'kind': 'model', 'config': MODEL}
put('ckpt', 'model', 2, st_file(tens, mmeta))
# a PyTorch state dict (torch.save of model.state_dict() converted with safetensors)
put('ckpt', 'torch_state_dict', 2, st_file(tens + [('bn1.num_batches_tracked', 'I64', [], struct.pack('<q', 200))],
                                                None))
put('ckpt', 'dtypes', 3, st_file([('a', 'F64', [2], b'\0' * 16), ('b', 'BF16', [3], b'\0' * 6),
                                      ('c', 'U8', [0, 4], b''), ('d', 'BOOL', [1], b'\1')], {'format': 'pt'}))
