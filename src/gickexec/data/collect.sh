#!/bin/sh
# collect.sh -- gather what 'gickexec preflight' reads from a running arm64 Linux.
#
#   sudo sh collect.sh OUTDIR                   # read-only: logs and /proc, /sys files
#   sudo sh collect.sh OUTDIR -l Image --initrd=initrd.img --append="..."
#   sudo sh collect.sh OUTDIR -p Image --initrd=initrd.img --append="..."
#
# Without arguments after OUTDIR it only reads.  With them it runs 'kexec -d ARGS' to
# record where kexec-tools places the planned load (kexec -d prints the segments): that
# LOADS the image (replacing an image loaded before) but does not boot it; 'kexec -u'
# (or 'kexec -p -u') unloads it again.  Then: gickexec preflight OUTDIR
#
# POSIX sh (dash, busybox ash); needs cat, mkdir, dmesg, uname.  It writes only below
# OUTDIR.  GICKEXEC_ROOT prefixes every /proc and /sys path, GICKEXEC_DMESG and
# GICKEXEC_KEXEC replace the dmesg and kexec commands (the project's tests use them).
set -u

if [ $# -lt 1 ]; then
    echo "usage: sh collect.sh OUTDIR [kexec -l|-p ARGS...]" >&2
    exit 2
fi
out=$1
shift
root=${GICKEXEC_ROOT:-}
dmesg_cmd=${GICKEXEC_DMESG:-dmesg}
kexec_cmd=${GICKEXEC_KEXEC:-kexec}

mkdir -p "$out" || exit 2
: > "$out/notes.txt"
note() {
    echo "$*" >> "$out/notes.txt"
    echo "collect.sh: $*" >&2
}

# copy FILE NAME: a kernel file into the bundle, noting what could not be read
copy() {
    if [ -r "$root$1" ]; then
        cat "$root$1" > "$out/$2" 2>/dev/null || note "$1: read failed"
    else
        note "$1: not readable"
    fi
}

# The running kernel's log from its first line: 'Booting Linux on physical CPU' and the
# GIC/ITS lines come early, so a ring buffer that wrapped has lost them.
if $dmesg_cmd > "$out/dmesg.txt" 2>/dev/null; then :; else
    note "dmesg failed (kernel.dmesg_restrict: run as root)"
fi
grep -q 'Booting Linux on physical CPU' "$out/dmesg.txt" 2>/dev/null \
    || note "dmesg.txt has no 'Booting Linux on physical CPU': the log's start is lost"

copy /proc/iomem iomem.txt
# for users other than root the kernel prints every /proc/iomem address as zeros
if grep -q '^00000000-00000000 : System RAM' "$out/iomem.txt" 2>/dev/null; then
    note "/proc/iomem shows zero addresses: run as root"
fi
copy /proc/cmdline cmdline.txt
copy /proc/interrupts interrupts.txt

{
    if [ -d "$root/sys/firmware/efi" ]; then echo "efi: present"; else echo "efi: absent"; fi
    if [ -r "$root/sys/firmware/efi/systab" ]; then cat "$root/sys/firmware/efi/systab"; fi
    if [ -e "$root/sys/firmware/fdt" ]; then echo "fdt: present"; else echo "fdt: absent"; fi
    if [ -d "$root/sys/firmware/acpi/tables" ]; then echo "acpi: present"; else echo "acpi: absent"; fi
} > "$out/efi.txt"

# memblock's view, where debugfs is mounted (CONFIG_ARCH_KEEP_MEMBLOCK, arm64 has it)
if [ -d "$root/sys/kernel/debug/memblock" ]; then
    mkdir -p "$out/memblock"
    copy /sys/kernel/debug/memblock/memory memblock/memory.txt
    copy /sys/kernel/debug/memblock/reserved memblock/reserved.txt
else
    note "no /sys/kernel/debug/memblock (debugfs not mounted, or not root)"
fi

{
    for f in kexec_loaded kexec_crash_loaded kexec_crash_size; do
        if [ -r "$root/sys/kernel/$f" ]; then
            echo "$f=$(cat "$root/sys/kernel/$f")"
        else
            echo "$f=unknown"
        fi
    done
} > "$out/kexec.txt"

uname -a > "$out/uname.txt" 2>/dev/null || note "uname failed"

if [ $# -gt 0 ]; then
    if $kexec_cmd -d "$@" > "$out/kexec-d.txt" 2>&1; then :; else
        note "kexec -d $* failed: see kexec-d.txt"
    fi
fi
echo "collect.sh: bundle in $out; next: gickexec preflight $out" >&2
