#!/usr/bin/env python3
"""Extracts tokenizer vocabularies from the npm packages llama-tokenizer-js, mistral-tokenizer-js and
llama3-tokenizer-js into compact gzip files used by the tokenizer tests.

Usage: npm pack llama-tokenizer-js@1.2.2 mistral-tokenizer-js@1.0.0 llama3-tokenizer-js@1.2.0 in a temp folder,
untar each into <name>/package, then: python3 convert.py <temp folder> <output folder>

Output per vocabulary:
  <name>.vocab.tsv.gz   one line per token id: "<type>\t<score>\t<token text>" (type as in GGUF tokenizer.ggml.token_type);
                        lines end with "\n" only: some SentencePiece pieces contain a raw "\r", so readers must not split on it
  <name>.merges.txt.gz  one line per merge, highest priority first: "<left> <right>" (byte-level BPE only)

The SentencePiece packages ship the Hugging Face tokenizer.json vocabulary plus its merge list, not the SentencePiece
scores. The merge list is ordered by the id of the merged token (checked below), which is how the SentencePiece scores
order the pieces too, so score = -id for normal pieces reproduces the score ordering that SentencePiece merging uses;
the whitespace-run pieces, which the list puts last, get -1e9 (merged after everything else).
"""
import base64, gzip, os, re, sys

def js_string(source, name):
    match = re.search(r'const ' + re.escape(name) + r' = "([^"]*)"', source)
    if not match:
        raise SystemExit(f"constant {name} not found")
    return match.group(1)

def write_gz(path, lines):
    # mtime=0 keeps the output byte-identical between runs.
    with open(path, 'wb') as raw, gzip.GzipFile(fileobj=raw, mode='wb', compresslevel=9, mtime=0) as gz:
        gz.write(('\n'.join(lines) + '\n').encode('utf-8'))

def check_token(token, index):
    if '\t' in token or '\n' in token:
        raise SystemExit(f"token {index} contains a tab or line feed: {token!r}")

def convert_spm(js_path, vocab_const, merges_const, out_name, out_dir):
    source = open(js_path, encoding='utf-8').read()
    tokens = base64.b64decode(js_string(source, vocab_const)).decode('utf-8').split('\n')
    merges_raw = base64.b64decode(js_string(source, merges_const))
    ids = [merges_raw[i] | (merges_raw[i + 1] << 8) for i in range(0, len(merges_raw), 2)]
    index = {t: i for i, t in enumerate(tokens)}
    merged_ids = [index[tokens[ids[r]] + tokens[ids[r + 1]]] for r in range(0, len(ids), 2)]
    # The merge list is ordered by merged id, except for a tail of whitespace-run pieces ("▁▁", "▁▁▁▁", ...) that
    # SentencePiece scores far below everything else (they are merged last); find where that tail starts.
    tail_start = next((k for k in range(1, len(merged_ids)) if merged_ids[k] < merged_ids[k - 1]), len(merged_ids))
    if merged_ids[:tail_start] != sorted(merged_ids[:tail_start]):
        raise SystemExit(f"{out_name}: merge list head is not ordered by merged id")
    low_score_ids = set(merged_ids[tail_start:])
    if low_score_ids & set(merged_ids[:tail_start]) or any(set(tokens[i]) != {'\u2581'} for i in low_score_ids):
        raise SystemExit(f"{out_name}: merge list tail is not made of whitespace-run pieces only")
    lines = []
    for i, token in enumerate(tokens):
        check_token(token, i)
        if token == '<unk>':
            kind, score = 2, 0.0
        elif token in ('<s>', '</s>'):
            kind, score = 3, 0.0
        elif re.fullmatch(r'<0x[0-9A-F]{2}>', token):
            kind, score = 6, 0.0
        else:
            kind, score = 1, (-1e9 if i in low_score_ids else float(-i))
        lines.append(f"{kind}\t{score:g}\t{token}")
    write_gz(os.path.join(out_dir, out_name + '.vocab.tsv.gz'), lines)
    print(out_name, len(tokens), 'tokens', len(ids) // 2, 'merges (checked, not stored)')

def convert_llama3(js_path, special_js_path, out_dir):
    source = open(js_path, encoding='utf-8').read()
    tokens = base64.b64decode(js_string(source, 'llama_vocab_base64')).decode('utf-8').split('\n')
    packed = base64.b64decode(js_string(source, 'llama_merges_binary'))
    bits = ''.join(f'{b:08b}' for b in packed)
    ids = [int(bits[i:i + 17], 2) for i in range(0, len(bits) - 16, 17)]
    if len(ids) % 2:
        ids = ids[:-1]  # trailing zero padding
    merges = [tokens[ids[i]] + ' ' + tokens[ids[i + 1]] for i in range(0, len(ids), 2)]
    # Special tokens are appended after the 128000 regular tokens, in the order the package lists them.
    special_source = open(special_js_path, encoding='utf-8').read()
    block = re.search(r'const llama3SpecialTokens = \[(.*?)\];', special_source, re.S).group(1)
    specials = re.findall(r"'([^']+)'", block)
    loop = re.search(r'for \(let i = (\d+); i <= (\d+); i\+\+\)', special_source[special_source.index('llama3SpecialTokens = ['):])
    specials += [f'<|reserved_special_token_{i}|>' for i in range(int(loop.group(1)), int(loop.group(2)) + 1)]
    if len(tokens) != 128000 or len(specials) != 256:
        raise SystemExit(f"unexpected llama3 sizes: {len(tokens)} tokens, {len(specials)} special tokens")
    lines = []
    for i, token in enumerate(tokens):
        check_token(token, i)
        lines.append(f"1\t0\t{token}")
    lines += [f"3\t0\t{token}" for token in specials]
    write_gz(os.path.join(out_dir, 'llama3.vocab.tsv.gz'), lines)
    write_gz(os.path.join(out_dir, 'llama3.merges.txt.gz'), merges)
    print('llama3', len(lines), 'tokens', len(merges), 'merges')

if __name__ == '__main__':
    src, out = sys.argv[1], sys.argv[2]
    convert_spm(os.path.join(src, 'llama-tokenizer-js-1.2.2/package/llama-tokenizer.js'),
                'llama_vocab_base64', 'llama_merges_binary', 'llama2', out)
    convert_spm(os.path.join(src, 'mistral-tokenizer-js-1.0.0/package/mistral-tokenizer.js'),
                'vocab_base64', 'merges_binary', 'mistral', out)
    convert_llama3(os.path.join(src, 'llama3-tokenizer-js-1.2.0/package/src/data-converted.js'),
                   os.path.join(src, 'llama3-tokenizer-js-1.2.0/package/src/llama3-tokenizer.js'), out)
