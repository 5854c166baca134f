#!/usr/bin/env bash
# Run s3edit over every video in a folder, unattended: align, then paste (or edit).
#
#   examples/batch.sh IN_DIR OUT_DIR
#
# For each video IN_DIR/NAME.EXT (mp4 mov mkv avi webm m4v, not recursive) it writes
#   OUT_DIR/NAME.EXT.job/          the job folder (a rerun resumes / skips finished work)
#   OUT_DIR/NAME.EXT.s3edit.mp4    the pasted video
# and appends every command's output to OUT_DIR/batch.log. A clip that fails is logged
# and skipped; the others still run. Exit status: 0 all clips done, 1 some failed,
# 2 bad usage or no videos found.
#
# Environment (all optional):
#   S3EDIT        command to run (default: s3edit)
#   ALIGN_ARGS    extra arguments for `s3edit align`   e.g. "--size 256 --detector dlib"
#   PASTE_ARGS    extra arguments for `s3edit paste`   e.g. "--crf 18 --blend detail"
#   EDIT_ARGS     when set, `s3edit edit JOB $EDIT_ARGS -o OUT` replaces the paste step
#                 (it encodes, edits and pastes)   e.g. "--attr Eyeglasses=0.6"
set -u -o pipefail

if [ "$#" -ne 2 ]; then
    echo "usage: $0 IN_DIR OUT_DIR" >&2
    exit 2
fi
in_dir=$1
out_dir=$2
s3edit=${S3EDIT:-s3edit}
if [ ! -d "$in_dir" ]; then
    echo "error: input folder '$in_dir' does not exist." >&2
    exit 2
fi
mkdir -p "$out_dir" || { echo "error: cannot create '$out_dir'." >&2; exit 2; }
log="$out_dir/batch.log"

# word-split the optional argument strings on purpose
read -r -a align_args <<< "${ALIGN_ARGS:-}"
read -r -a paste_args <<< "${PASTE_ARGS:-}"
read -r -a edit_args <<< "${EDIT_ARGS:-}"

run() {  # run a command, its output appended to the log
    echo "+ $*" >> "$log"
    "$@" >> "$log" 2>&1
}

process() {  # one clip; nonzero on the first failing stage
    local video=$1 base job out
    base=$(basename -- "$video")
    job="$out_dir/$base.job"
    out="$out_dir/$base.s3edit.mp4"
    run "$s3edit" --quiet align "$video" -o "$job" "${align_args[@]}" || return 1
    if [ "${#edit_args[@]}" -gt 0 ]; then
        run "$s3edit" --quiet edit "$job" "${edit_args[@]}" -o "$out" --overwrite || return 1
    else
        run "$s3edit" --quiet paste "$job" -o "$out" --overwrite "${paste_args[@]}" || return 1
    fi
}

echo "=== batch $(date -u +%Y-%m-%dT%H:%M:%SZ): $in_dir -> $out_dir" >> "$log"
ok=0
failed=()
found=0
while IFS= read -r -d '' video; do
    found=$((found + 1))
    start=$(date +%s)
    if process "$video"; then
        ok=$((ok + 1))
        echo "ok     $(basename -- "$video") ($(( $(date +%s) - start )) s)"
    else
        failed+=("$(basename -- "$video")")
        echo "FAILED $(basename -- "$video") (see $log)"
        echo "!!! FAILED: $video" >> "$log"
    fi
done < <(find "$in_dir" -maxdepth 1 -type f \( -iname '*.mp4' -o -iname '*.mov' -o -iname '*.mkv' \
            -o -iname '*.avi' -o -iname '*.webm' -o -iname '*.m4v' \) -print0 | sort -z)

if [ "$found" -eq 0 ]; then
    echo "error: no videos (mp4 mov mkv avi webm m4v) in '$in_dir'." >&2
    exit 2
fi
echo "$ok of $found clips done; ${#failed[@]} failed${failed[*]:+: ${failed[*]}}"
[ "${#failed[@]}" -eq 0 ]
