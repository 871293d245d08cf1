#!/usr/bin/env python3
"""Copies the expected tokenizations from the npm packages' own test suites (made with the real tokenizers) into
known-tokenizations.json. Usage: python3 extract_tests.py <temp folder with the unpacked packages> <output folder>"""
import json, os, re, sys

CASE = re.compile(r'(testCase|testEncodeAndDecode)\(\s*("(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\')\s*,\s*\[([\d,\s]*)\]')

def js_string(literal):
    body = literal[1:-1]
    if literal[0] == "'":
        body = body.replace("\\'", "'").replace('"', '\\"')
    return json.loads('"' + body + '"', strict=False)  # strict=False: the sources contain raw tabs

def extract(path):
    source = open(path, encoding='utf-8').read()
    cases = []
    for _, literal, ids in CASE.findall(source):
        cases.append({'text': js_string(literal), 'ids': [int(x) for x in ids.replace('\n', ' ').split(',') if x.strip()]})
    return cases

if __name__ == '__main__':
    src, out = sys.argv[1], sys.argv[2]
    data = {
        'llama2': extract(os.path.join(src, 'llama-tokenizer-js-1.2.2/package/llama-tokenizer.js')),
        'mistral': extract(os.path.join(src, 'mistral-tokenizer-js-1.0.0/package/mistral-tokenizer.js')),
        'llama3': extract(os.path.join(src, 'llama3-tokenizer-js-1.2.0/package/src/llama3-tokenizer.js')),
    }
    with open(os.path.join(out, 'known-tokenizations.json'), 'w', encoding='utf-8') as f:
        json.dump(data, f, ensure_ascii=False, indent=1)
    for name, cases in data.items():
        print(name, len(cases), 'cases')
