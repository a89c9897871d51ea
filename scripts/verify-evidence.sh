#!/usr/bin/env bash
# Checks a Nova evidence bundle with standard tools only (tar, sha256sum, jq, base64, openssl),
# the way a reviewer who does not run Nova would. Usage:
#   scripts/verify-evidence.sh BUNDLE.tar.gz TRUSTED-KEY.pem
# TRUSTED-KEY.pem is the operator's public key, obtained out of band (`nova audit key --pem`).
#
# What standard tools check here: every file's SHA-256 (SHA256SUMS), the DSSE signature over the
# in-toto statement, and that the statement names every file with its digest. So the bundle is
# exactly what the key's holder signed.
#
# What they cannot check (run `nova evidence verify BUNDLE --key KEY` for these): that the
# entries give the Merkle root of audit/checkpoint.note (RFC 6962 leaf and node hashing over
# audit/base-tree.json's frontier); the C2SP signed-note signatures of the checkpoints; the chain
# of the stored checkpoints in audit/checkpoints.jsonl and their RFC 6962 consistency proofs to
# the bundle's tree; that entry sequence numbers have no gaps. Nor can any tool, from the bundle
# alone, tell history that was rewritten before the export from the truth: compare the bundle's
# checkpoints with ones kept elsewhere (`nova serve --checkpoint-mirror`), which the export
# itself already checked when given `--checkpoint-dir`.
set -euo pipefail
bundle=$(realpath "$1")
key=$(realpath "$2")
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"

mkdir files
tar -xzf "$bundle" -C files

# 1. Every file matches its SHA-256.
(cd files && sha256sum --check --strict --quiet SHA256SUMS)

# 2. The DSSE envelope's signature (over DSSEv1 pre-authentication encoding) verifies.
jq -j .payload files/attestation.dsse.json | base64 -d > statement.json
jq -j '.signatures[0].sig' files/attestation.dsse.json | base64 -d > statement.sig
type=$(jq -j .payloadType files/attestation.dsse.json)
{ printf 'DSSEv1 %d %s %d ' "${#type}" "$type" "$(stat -c %s statement.json)"; cat statement.json; } > statement.pae
openssl pkeyutl -verify -pubin -inkey "$key" -rawin -in statement.pae -sigfile statement.sig

# 3. The signed statement names every file with the digest it has.
jq -r '.subject[] | "\(.digest.sha256)  \(.name)"' statement.json > signed.sums
(cd files && sha256sum --check --strict --quiet ../signed.sums)
test "$(wc -l < signed.sums)" -eq "$(find files -type f ! -name attestation.dsse.json | wc -l)"

echo "evidence bundle verified: $(wc -l < files/audit/entries.jsonl) audit entries, $(wc -l < signed.sums) signed files"
echo "not checked by standard tools: Merkle root of the entries, checkpoint signatures, chain and consistency proofs (run nova evidence verify)"
