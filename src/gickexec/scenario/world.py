"""A machine, its firmware and the succession of kernels it runs: the library's main API.

>>> from gickexec import World
>>> w = World.build("efi-server-8", seed=1)
>>> w.add_device("eth0", device_id=0x100, nvec=4)
>>> w.boot("v6.6"); w.traffic("eth0", 8); w.kexec("v6.6"); w.traffic("eth0", 8)
>>> w.ledger.lost, w.corruption.bits
(0, 0)

Besides running kernels, the world keeps two observers that never influence the
simulation: the :class:`MsiLedger` (what happened to each MSI) and the
:class:`CorruptionMonitor` (every bit a GIC agent changed in memory that the kernel in
charge did not give it).
"""

from __future__ import annotations

import dataclasses
import functools
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from gickexec.arch.efi import LINUX_EFI_MEMRESERVE_TABLE_GUID
from gickexec.fw.memreserve import MemreserveChain, walk_memreserve
from gickexec.fw.uefi import UefiFirmware, read_config_tables
from gickexec.hw.gicr import PENDED_OUTCOMES
from gickexec.hw.its import MsiResult
from gickexec.hw.machine import HELD_IN_PBA, Machine, MsiDevice
from gickexec.hw.memory import PAGE_SHIFT, PAGE_SIZE, Agent, AgentKind, GicWrite
from gickexec.hw.platform import PLATFORMS, Platform
from gickexec.kernel.cmdline import KernelCmdline, parse_cmdline
from gickexec.kernel.freebsd_kboot import FreeBsdKboot
from gickexec.kernel.kernel import IrqDesc, KdumpParams, Kernel
from gickexec.kernel.kexec import (
    INITRD_BYTES,
    ULONG_MAX,
    KexecOptions,
    KexecSegments,
    Loader,
    kexec_fdt_bytes,
    load_segments,
)
from gickexec.kernel.mm import SEG_DTB, SEG_IMAGE, SEG_INITRD, Role, free_ranges
from gickexec.kernel.profiles import KernelProfile, get_profile

__all__ = ["CorruptionEvent", "CorruptionMonitor", "KernelJudge", "MsiLedger", "World"]

#: Corruption events kept in full; beyond this only the count grows.
MAX_CORRUPTION_EVENTS = 10_000
#: GIC writes into a kernel's boot segments remembered per kernel (the first one decides)
MAX_SEGMENT_HITS = 16
_SEG_KINDS = (SEG_IMAGE, SEG_INITRD, SEG_DTB)
_PENDED = PENDED_OUTCOMES[0]  # a module constant: an enum member look-up is a call
#: KexecSegments.named() name -> owner role kind
_SEG_ROLE = {"kernel image": SEG_IMAGE, "initrd": SEG_INITRD, "device tree": SEG_DTB}


class _Token(NamedTuple):
    """One MSI in flight (a named tuple: one is made per MSI)."""

    generation: int
    device: str
    vector: int


@dataclass(slots=True)
class MsiLedger:
    """Follows every MSI from the device to a handler, or to the reason it was lost."""

    sent: int = 0
    delivered: int = 0
    lost_reasons: Counter[str] = field(default_factory=Counter)
    lost_per_cpu: Counter[int] = field(default_factory=Counter)
    delivered_per_cpu: Counter[int] = field(default_factory=Counter)
    sent_per_generation: Counter[int] = field(default_factory=Counter)
    delivered_per_generation: Counter[int] = field(default_factory=Counter)
    _pending: dict[tuple[int, int], list[_Token]] = field(default_factory=lambda: defaultdict(list))
    #: events a device holds in its Pending Bit Array, per (device, vector)
    _held: dict[tuple[str, int], list[_Token]] = field(default_factory=lambda: defaultdict(list))

    @property
    def lost(self) -> int:
        return sum(self.lost_reasons.values())

    @property
    def in_flight(self) -> int:
        return sum(len(v) for v in self._pending.values())

    @property
    def held_at_device(self) -> int:
        """Events raised on masked vectors whose message the device has not sent."""
        return sum(len(v) for v in self._held.values())

    def record_release(self, device: str, vector: int, result: MsiResult) -> None:
        """A vector was unmasked and the device sent the message it held: the events it
        stood for go where the message went (one message for all, as the PBA has one bit
        per vector)."""
        tokens = self._held.pop((device, vector), [])
        if result.pended and result.cpu is not None and result.intid is not None:
            self._pending[(result.cpu, result.intid)].extend(tokens)
        elif tokens:
            self.lost_reasons[f"dropped: {result.outcome}"] += len(tokens)

    def record_send(
        self,
        token: _Token,
        outcome: str,
        cpu: int | None,
        intid: int | None,
        pended: bool,
        intended_cpu: int | None = None,
    ) -> None:
        """An MSI was sent; ``intended_cpu`` is where the kernel meant it to go."""
        self.sent += 1
        self.sent_per_generation[token.generation] += 1
        if pended and cpu is not None and intid is not None:  # nearly every MSI
            self._pending[(cpu, intid)].append(token)
        elif outcome == HELD_IN_PBA:
            self._held[(token.device, token.vector)].append(token)
        else:
            self.lost_reasons[f"dropped: {outcome}"] += 1
            if intended_cpu is not None:
                self.lost_per_cpu[intended_cpu] += 1

    def record_irq(self, generation: int, cpu: int, intid: int, desc: IrqDesc | None) -> None:
        """Kernel ``generation``'s handler took ``intid`` on ``cpu`` (generation first:
        the kernel's ``on_irq`` is this bound to it positionally, which a call per MSI
        passes on cheaper than a keyword)."""
        for token in self._pending.pop((cpu, intid), ()):
            if desc is not None and desc.device == token.device and desc.vector == token.vector:
                self.delivered += 1
                self.delivered_per_cpu[cpu] += 1
                self.delivered_per_generation[generation] += 1
            elif desc is None:
                self.lost_reasons["taken by a kernel with no handler for the LPI"] += 1
                self.lost_per_cpu[cpu] += 1
            else:
                self.lost_reasons[f"delivered to another handler ({desc.action})"] += 1
                self.lost_per_cpu[cpu] += 1

    def settle(self, machine: Machine) -> None:
        """At the end: classify MSIs still pending in a redistributor as lost."""
        for (cpu, intid), tokens in self._pending.items():
            rd = machine.rdists[cpu]
            if not rd.is_pending(intid):
                why = "pending state erased from memory before delivery"
            elif not rd.config(intid).Enable:
                table = f"{rd.prop_addr:#x}" if rd.prop_addr is not None else "none"
                why = (
                    "stuck pending: LPI disabled in the property table the redistributor "
                    f"uses ({table})"
                )
            else:
                why = "stuck pending: no CPU took it"
            self.lost_reasons[why] += len(tokens)
            self.lost_per_cpu[cpu] += len(tokens)
        self._pending.clear()


@dataclass(frozen=True, slots=True)
class CorruptionEvent:
    """One bit a GIC agent changed in memory it had not been given."""

    addr: int
    bit: int
    value: int
    writer: str
    owner: str
    generation: int
    between_kernels: bool


Judge = Callable[[int, Agent], tuple[bool, str]]


class CorruptionMonitor:
    """Observes GIC writes; ``judge(addr, agent)`` says (legitimate, owner label).

    A judge that is a :class:`KernelJudge` also knows whole pages an agent may write
    anywhere in: a write inside such a page is legitimate bit by bit and is not judged
    bit by bit, and the page goes into ``quiet``, which memory is given
    (``PhysicalMemory.observe_gic_writes``) and which is emptied whenever the judge or
    the kernel's ownership map changes.  ``page_cache = False``: every changed bit is
    judged (the reference)."""

    #: ``page_cache`` of the monitors made from then on
    default_page_cache = True

    def __init__(self) -> None:
        self.generation = 0
        self.between_kernels = False
        self.bits = 0
        self.events: list[CorruptionEvent] = []
        #: page frame -> the GIC agent the current judge lets write anywhere in it
        self.quiet: dict[int, Agent] = {}
        self._page_cache = self.default_page_cache
        self._judge: Judge = lambda addr, agent: (True, "")

    @property
    def page_cache(self) -> bool:
        """False: every changed bit is judged, even inside a page known to be the writer's."""
        return self._page_cache

    @page_cache.setter
    def page_cache(self, on: bool) -> None:
        self._page_cache = on
        self.quiet.clear()

    @property
    def judge(self) -> Judge:
        return self._judge

    @judge.setter
    def judge(self, judge: Judge) -> None:
        old = self._judge
        if isinstance(old, KernelJudge):
            old.k.owners.on_change.remove(self._forget_quiet)
        self._judge = judge
        self.quiet.clear()
        if isinstance(judge, KernelJudge):
            judge.k.owners.on_change.append(self._forget_quiet)

    def _forget_quiet(self) -> None:
        # A method, not ``quiet.clear``: a copied world's map must call its own monitor.
        self.quiet.clear()

    def on_write(self, w: GicWrite) -> None:
        judge = self._judge
        if self._page_cache and isinstance(judge, KernelJudge):
            pfn = w.addr >> PAGE_SHIFT
            if (w.addr + len(w.new) - 1) >> PAGE_SHIFT == pfn:
                if self.quiet.get(pfn) is w.agent:
                    return
                if judge.clean_page(pfn, w.agent):
                    self.quiet[pfn] = w.agent
                    return
        new = int.from_bytes(w.new, "little")
        changed = int.from_bytes(w.old, "little") ^ new
        while changed:
            low = changed & -changed
            pos = low.bit_length() - 1
            changed ^= low
            addr = w.addr + pos // 8
            ok, owner = judge(addr, w.agent)
            if ok:
                continue
            self.bits += 1
            if len(self.events) < MAX_CORRUPTION_EVENTS:
                self.events.append(
                    CorruptionEvent(
                        addr,
                        pos % 8,
                        (new >> pos) & 1,
                        str(w.agent),
                        owner,
                        self.generation,
                        self.between_kernels,
                    )
                )


@functools.cache  # asked on every GIC write; one entry per redistributor and ITS
def _role_for(agent: Agent) -> Role | None:
    if agent.kind == AgentKind.GICR:
        return Role("pend", agent.index)
    if agent.kind == AgentKind.ITS:
        return Role("its", agent.index)
    return None


class KernelJudge:
    """The judge while kernel ``k`` runs: GIC writes are fine in the tables ``k`` gave
    that agent.  A capture kernel also lets the crashed kernel's redistributors keep
    writing their own tables outside its memory (what ``/proc/vmcore`` will show)."""

    def __init__(self, k: Kernel, crashed: Kernel | None = None) -> None:
        self.k = k
        self.crashed = crashed

    def __call__(self, addr: int, agent: Agent) -> tuple[bool, str]:
        k, crashed = self.k, self.crashed
        owner = k.owner(addr)
        suffix = ""
        if owner is None and crashed is not None and not k.in_linear_map(addr, 1):
            owner = crashed.owner(addr)
            suffix = " (crashed kernel, in /proc/vmcore)"
        if owner is None:
            return False, "free memory" + suffix
        role = owner.role
        if role is not None and role.kind in _SEG_KINDS and not suffix:
            if len(k.gic_hits) < MAX_SEGMENT_HITS:
                k.gic_hit(role.kind, addr, str(agent))
            return False, owner.label
        ok = role is not None and role == _role_for(agent)
        return ok, owner.label + suffix

    def clean_page(self, pfn: int, agent: Agent) -> bool:
        """Whether ``self(addr, agent)`` is legitimate, with no side effect, for every
        ``addr`` of page frame ``pfn``: one owner of ``k`` holds the whole page, with the
        agent's role (then neither the crashed kernel nor the segments are asked)."""
        owners = self.k.owners
        start = pfn << PAGE_SHIFT
        held = owners.range_of(start)
        if held is None or held[1] < start + PAGE_SIZE:
            return False
        owner = owners.owner_at(start)
        assert owner is not None
        role = owner.role
        return role is not None and role.kind not in _SEG_KINDS and role == _role_for(agent)


class World:
    """A platform plus everything that happens to it, one kernel generation at a time."""

    #: False: ``traffic`` sends every MSI through the full path (the reference)
    batch_traffic = True
    #: False: no MSI takes ``Machine.msi_taken_at_once`` (the reference)
    fast_msi = True

    def __init__(self, platform: Platform, *, seed: int = 0) -> None:
        self.platform = platform
        self.seed = seed
        #: CONFIG_NR_CPUS of every kernel booted here (None: each profile's default)
        self.config_nr_cpus: int | None = None
        self.machine = Machine(platform)
        self.firmware = (
            UefiFirmware(self.machine.mem, platform.firmware_layout)
            if platform.firmware == "efi"
            else None
        )
        self.ledger = MsiLedger()
        self.machine.on_pba_release = lambda dev, vec, res: self.ledger.record_release(
            dev.name, vec, res
        )
        self.corruption = CorruptionMonitor()
        self.machine.mem.observe_gic_writes(self.corruption.on_write, self.corruption.quiet)
        self.generations: list[Kernel] = []
        self.memreserve_after: list[tuple[int, int] | None] = []
        #: steps that could not happen as asked (e.g. kexec from a crashed kernel)
        self.notes: list[str] = []
        #: filled by the scenario runner: the MSI books after each top-level step
        self.timeline: list[dict[str, Any]] = []
        self._shutdown_hooks: dict[str, bool] = {}
        self._next_vector: dict[str, int] = {}

    @classmethod
    def build(cls, platform: str | Platform, *, seed: int = 0) -> World:
        """A world on a preset (by name) or on any :class:`Platform`."""
        if isinstance(platform, Platform):
            return cls(platform, seed=seed)
        try:
            return cls(PLATFORMS[platform], seed=seed)
        except KeyError:
            raise KeyError(
                f"unknown platform {platform!r} (known: {', '.join(PLATFORMS)})"
            ) from None

    @property
    def kernel(self) -> Kernel:
        if not self.generations:
            raise RuntimeError("no kernel has booted yet")
        return self.generations[-1]

    def add_device(
        self, name: str, *, device_id: int, nvec: int, shutdown_hook: bool = True
    ) -> None:
        self.machine.add_device(name, device_id, nvec)
        self._shutdown_hooks[name] = shutdown_hook
        self._next_vector[name] = 0

    # -- steps ---------------------------------------------------------------------------

    def boot(
        self, profile: str, *, cmdline: str = "", initrd: int = 0, image: int | None = None
    ) -> Kernel:
        """Power on and boot ``profile`` through the platform's boot path, with an
        ``initrd``-byte initramfs; ``image`` pins where the boot loader put the image (a
        real run's KASLR choice), else the loader decides."""
        if self.generations:
            self.generations[-1].device_shutdown()
            self._record_memreserve(self.generations[-1])
            self.machine.power_on()
            if self.firmware is not None:
                self.firmware.power_on()
        if self.firmware is not None and initrd:
            # the firmware's loader names the initrd it hands over (EDK II QemuLoadImageLib)
            cmdline += self.firmware.layout.initrd_cmdline
        return self._start(
            profile,
            "firmware",
            cmdline=parse_cmdline(cmdline),
            initrd_bytes=initrd,
            pinned_image=image,
        )

    def _halted(self, what: str) -> bool:
        k = self.kernel
        if k.crashed is None:
            return False
        self.notes.append(f"{what} skipped: kernel gen {k.generation} is dead ({k.crashed})")
        return True

    def kexec(
        self,
        profile: str,
        *,
        cmdline: str = "",
        handover_msis: int = 0,
        loader: Loader = "kexec-tools",
        initrd: int = INITRD_BYTES,
        mem_min: int = 0,
        mem_max: int = ULONG_MAX,
        segments: KexecSegments | None = None,
    ) -> Kernel:
        """kexec from the running kernel into ``profile``: ``loader`` places the image,
        an ``initrd``-byte initramfs and the DTB (``kexec -l [--mem-min/--mem-max]`` or
        ``kexec -s -l``), then ``kexec -e``; ``segments`` (a real ``kexec -d``'s) are
        loaded where they say instead.  Devices that keep signalling during the
        handover send ``handover_msis`` MSIs before the new kernel starts."""
        old = self.kernel
        parsed = parse_cmdline(cmdline)
        if self._halted("kexec"):
            return old
        if loader == "kexec_file_load":
            missing = (
                f"{old.profile.name} has no kexec_file_load() on arm64"
                if not old.profile.kexec_file_load
                else f"{old.profile.name}'s build has no CONFIG_KEXEC_FILE"
                if not old.profile.build.config_kexec_file
                else ""
            )
            if missing:
                self.notes.append(f"kexec skipped: {missing} (kexec -s fails with ENOSYS)")
                return old
        opts = KexecOptions(
            get_profile(profile).build.image_size,
            initrd,
            kexec_fdt_bytes(self.platform, cmdline, kdump=False),
            mem_min,
            mem_max,
        )
        placed = segments or load_segments(
            loader, old.system_ram, self._loader_view(old, loader), opts
        )
        if isinstance(placed, str):
            self.notes.append(f"kexec skipped: {loader}: {placed}")
            return old
        segments = placed
        old.shutdown_for_kexec()
        self._record_memreserve(old)
        chain = self.memreserve_chain()
        published = chain.entries if chain is not None else []
        self.corruption.generation = old.generation + 1
        self.corruption.between_kernels = True
        hits: list[tuple[str, int, str]] = []

        def window_judge(addr: int, agent: Agent) -> tuple[bool, str]:
            for base, size in published:
                if base <= addr < base + size:
                    return True, "EFI memreserve entry"
            seg = segments.segment_at(addr)
            if seg is not None:
                if len(hits) < MAX_SEGMENT_HITS:
                    hits.append((_SEG_ROLE[seg], addr, str(agent)))
                return False, f"{seg} (gen {old.generation + 1}, loaded by {loader})"
            return False, "free memory (between kernels)"

        self.corruption.judge = window_judge
        if handover_msis:
            self._traffic_all(handover_msis, old.generation + 1)
        return self._start(profile, "kexec", cmdline=parsed, segments=segments, hits=hits)

    def _loader_view(self, old: Kernel, loader: Loader) -> list[tuple[int, int]]:
        """What ``loader`` keeps the segments away from, as ``(addr, size)`` ranges.

        kexec-tools: the "reserved" children of System RAM in /proc/iomem (page-rounded
        boot-time memblock reservations except "Kernel code"/"Kernel data" and "Crash
        kernel", which it does not exclude; since v5.5 also the memreserve list's entries
        and pages).  kexec_file_load: memblock's current reservations (since v5.14 also
        the memreserve list's)."""
        if loader == "kexec-tools":
            not_reserved = [*old.iomem_kernel] + ([old.crashkernel] if old.crashkernel else [])
            regions = [(s, s + n) for s, n in old.iomem_reserved]
            used = [
                (s & ~0xFFF, ((e + 0xFFF) & ~0xFFF) - (s & ~0xFFF))
                for s, e in free_ranges(regions, not_reserved)
            ]
            return used + (self._published_pages() if old.profile.memreserve_in_iomem else [])
        used = [(s, e - s) for s, e in old.memblock.reserved]
        return used + (self._published_pages() if old.profile.memreserve_in_memblock else [])

    def kdump(
        self,
        profile: str,
        *,
        cmdline: str = "nr_cpus=1",
        panic_cpu: int = 0,
        inflight_msis: int = 0,
        masked_msis: int = 0,
        reason: str = "sysrq triggered crash",
        initrd: int = INITRD_BYTES,
        segments: KexecSegments | None = None,
    ) -> Kernel | None:
        """The running kernel panics on ``panic_cpu`` and, if ``crashkernel=`` reserved
        room for it (``kexec -p``), boots the capture kernel ``profile`` there.

        Devices are not shut down on a panic, but their vectors are masked with the
        LPIs; ``inflight_msis`` MSIs per device, posted before that, arrive after it and
        before the capture kernel runs; ``masked_msis`` events per device raised after it
        are held in the device's Pending Bit Array, one message per vector sent when the
        capture kernel's driver unmasks the vector.  ``segments`` (a real ``kexec -d -p``'s) are
        loaded where they say instead of where the model's loader puts them.  Returns the
        capture kernel, or None when there is none to boot.
        """
        old = self.kernel
        parsed = parse_cmdline(cmdline)
        if self._halted("kdump"):
            return None
        if panic_cpu not in old.online_cpus:
            self.notes.append(f"CPU {panic_cpu} is not online: the panic happens on CPU0")
            panic_cpu = old.boot_cpu
        old.crash_shutdown(reason)
        self._record_memreserve(old)
        crash = old.crashkernel
        self.corruption.generation = old.generation + 1
        self.corruption.between_kernels = True
        old_judge = KernelJudge(old)

        def window_judge(addr: int, agent: Agent) -> tuple[bool, str]:
            if crash is not None and crash[0] <= addr < crash[0] + crash[1]:
                return False, "crashkernel region (capture kernel)"
            return old_judge(addr, agent)

        self.corruption.judge = window_judge
        if inflight_msis:
            self._traffic_all(inflight_msis, old.generation + 1, posted=True)
        if masked_msis:
            self._traffic_all(masked_msis, old.generation + 1)
        if crash is None:
            self.notes.append(
                f"kernel gen {old.generation} panicked with no crash kernel loaded "
                "(no crashkernel=): the machine hangs"
            )
            return None
        base, size = crash
        # kexec -p (kexec-tools): the image at the bottom of the region, elfcorehdr at
        # the top, initrd, DTB and purgatory above the image.
        opts = KexecOptions(
            get_profile(profile).build.image_size,
            initrd,
            kexec_fdt_bytes(self.platform, cmdline, kdump=True),
        )
        placed = segments or load_segments(
            "kexec-tools", old.system_ram, self._loader_view(old, "kexec-tools"), opts, crash
        )
        if isinstance(placed, str):
            self.notes.append(f"kdump: kexec -p failed: {placed}: the machine hangs")
            return None
        segments = placed
        vmcore = tuple(
            piece
            for start, end in old.memory
            for piece in ((start, min(end, base)), (max(start, base + size), end))
            if piece[1] > piece[0]
        )
        params = KdumpParams(crash, segments, vmcore, panic_cpu, old.nr_cpus)
        return self._start(profile, "kdump", cmdline=parsed, kdump=params, crashed=old)

    def cpu_down(self, cpu: int) -> None:
        """Offline ``cpu`` in the running kernel (``echo 0 > .../cpuN/online``)."""
        if not self._halted("cpu-down") and (why := self.kernel.cpu_down(cpu)):
            self.notes.append(f"cpu-down {cpu}: {why}")
        self.kernel.reap()

    def cpu_up(self, cpu: int) -> None:
        """Online ``cpu`` in the running kernel (``echo 1 > .../cpuN/online``)."""
        if not self._halted("cpu-up") and (why := self.kernel.cpu_up(cpu)):
            self.notes.append(f"cpu-up {cpu}: {why}")
        self.kernel.reap()

    def unbind(self, device: str) -> None:
        """Unbind ``device``'s driver in the running kernel (DISCARD each event, MAPD V=0)."""
        if device not in self.machine.devices:
            raise KeyError(f"no device {device!r}")
        if not self._halted("unbind") and (why := self.kernel.unbind(device)):
            self.notes.append(f"unbind {device}: {why}")
        self.kernel.reap()

    def bind(self, device: str) -> None:
        """Bind ``device``'s driver again in the running kernel (MAPD, MAPTI per vector)."""
        dev = self.machine.devices.get(device)
        if dev is None:
            raise KeyError(f"no device {device!r}")
        hook = self._shutdown_hooks[device]
        if not self._halted("bind") and (why := self.kernel.bind(dev, shutdown_hook=hook)):
            self.notes.append(f"bind {device}: {why}")
        self.kernel.reap()

    def _start(
        self,
        profile_name: str,
        entry: str,
        *,
        cmdline: KernelCmdline | None = None,
        kdump: KdumpParams | None = None,
        crashed: Kernel | None = None,
        segments: KexecSegments | None = None,
        hits: list[tuple[str, int, str]] | None = None,
        initrd_bytes: int = 0,
        pinned_image: int | None = None,
    ) -> Kernel:
        profile = get_profile(profile_name)
        if self.config_nr_cpus is not None:
            profile = dataclasses.replace(profile, nr_cpus=self.config_nr_cpus)
        gen = len(self.generations)
        k = self._kernel_class(profile)(
            self.machine,
            profile,
            generation=gen,
            entry="firmware" if entry == "firmware" else "kdump" if kdump else "kexec",
            seed=self.seed,
            firmware=self.firmware,
            cmdline=cmdline,
            kdump=kdump,
            segments=segments,
            initrd_bytes=initrd_bytes,
            pinned_image=pinned_image,
        )
        k.gic_hits.extend(hits or [])
        k.on_irq = functools.partial(self.ledger.record_irq, gen)
        self.generations.append(k)
        self.corruption.generation = gen
        self.corruption.between_kernels = False
        self.corruption.judge = KernelJudge(k, crashed)
        devices = [(d, self._shutdown_hooks[d.name]) for d in self.machine.devices.values()]
        k.boot(devices)
        return k

    def _kernel_class(self, profile: KernelProfile) -> Callable[..., Kernel]:
        """What runs ``profile``: Linux, or FreeBSD entered by kboot.  A subclass may
        return a variant (scenario/fixes.py: kernels that implement a candidate fix)."""
        return FreeBsdKboot if profile.kind == "freebsd-kboot" else Kernel

    def traffic(self, device: str, msis: int) -> None:
        """``device`` raises ``msis`` MSIs, round-robin over its vectors; CPUs take them.

        Long bursts take the batched path (``_traffic_batched``), whose end state is the
        one-at-a-time path's; ``batch_traffic = False`` sends each MSI through it."""
        dev = self.machine.devices.get(device)
        if dev is None:
            raise KeyError(f"no device {device!r}")
        if self.batch_traffic:
            msis = self._traffic_batched(dev, msis)
        self._traffic_each(dev, msis)

    def _traffic_batched(self, dev: MsiDevice, msis: int) -> int:
        """Send most of a burst in whole rounds over the device's vectors; returns how
        many MSIs are left for the one-at-a-time path.

        The first round runs one at a time and fills the caches; the second also runs one
        at a time, watched.  If it left every piece of state an MSI can read or change as
        it found it (memory the GIC wrote, redistributors, CPU interfaces, guest errors,
        corruption, the kernel's log and CPUs, MSIs in flight), the next round starts
        from the same state and so does exactly what the second did: the counters
        (ledger, per-IRQ counts) grow by the second round's increments once per round,
        and the last writer of every page written stays the same.  Otherwise (LPIs left
        pending, corruption, a crash) everything goes one at a time, and so it does when
        someone else observes the GIC's writes (they would miss the repeated rounds')."""
        n = dev.nvec
        mem = self.machine.mem
        if not n or msis < 3 * n or mem.gic_observers != (self.corruption.on_write,):
            return msis
        self._traffic_each(dev, n)
        k = self.kernel
        before = self._steady_key(k)
        books = self._books(k)
        written: dict[int, bytes] = {}

        def record(w: GicWrite) -> None:
            written.setdefault(w.addr, w.old)

        mem.observe_gic_writes(record)
        try:
            self._traffic_each(dev, n)
        finally:
            mem.unobserve_gic_writes(record)
        left = msis - 2 * n
        restored = all(mem.read(a, len(old)) == old for a, old in written.items())
        if not restored or self._steady_key(k) != before:
            return left
        self._repeat_books(k, books, left // n)
        return left % n

    def _steady_key(self, k: Kernel) -> tuple[object, ...]:
        m = self.machine
        return (
            tuple(rd.state_key() for rd in m.rdists),
            tuple(c.state_key() for c in m.cpuifs),
            len(m.events.errors),
            m.events.dropped,
            self.corruption.bits,
            len(self.corruption.events),
            len(self.notes),
            self.ledger.in_flight,
            self.ledger.held_at_device,
            k.crashed,
            tuple(k.online_cpus),
            len(k.gic_hits),
            len(k.log.lines),
        )

    def _books(self, k: Kernel) -> tuple[list[int], list[Counter[Any]], list[dict[int, int]]]:
        """The counters one round of traffic adds to: (ints, Counters, per-IRQ counts)."""
        led = self.ledger
        return (
            [led.sent, led.delivered, k.unexpected_irqs],
            [
                Counter(c)
                for c in (
                    led.lost_reasons,
                    led.lost_per_cpu,
                    led.delivered_per_cpu,
                    led.sent_per_generation,
                    led.delivered_per_generation,
                )
            ],
            [dict(d.counts) for d in k.irqs.values()],
        )

    def _repeat_books(
        self,
        k: Kernel,
        before: tuple[list[int], list[Counter[Any]], list[dict[int, int]]],
        rounds: int,
    ) -> None:
        """Add ``rounds`` times what the counters gained since ``before`` was taken."""
        ints, counters, counts = before
        now_ints, now_counters, _ = self._books(k)
        led = self.ledger
        led.sent += (now_ints[0] - ints[0]) * rounds
        led.delivered += (now_ints[1] - ints[1]) * rounds
        k.unexpected_irqs += (now_ints[2] - ints[2]) * rounds
        live: tuple[Counter[Any], ...] = (
            led.lost_reasons,
            led.lost_per_cpu,
            led.delivered_per_cpu,
            led.sent_per_generation,
            led.delivered_per_generation,
        )
        for counter, old, new in zip(live, counters, now_counters, strict=True):
            for key, gained in (new - old).items():
                counter[key] += gained * rounds
        for desc, old_counts in zip(k.irqs.values(), counts, strict=True):
            for cpu, count in list(desc.counts.items()):
                gained = count - old_counts.get(cpu, 0)
                if gained:
                    desc.counts[cpu] = count + gained * rounds

    def _traffic_each(self, dev: MsiDevice, msis: int) -> None:
        """Every MSI from the device write to the handler, one at a time.  With
        ``fast_msi`` an MSI its CPU takes at once goes through
        ``Machine.msi_taken_at_once`` (the same end state in one step), every other
        through ``signal_msi`` and the kernel's interrupt loop (the reference)."""
        device = dev.name
        k = self.kernel
        signal, record_send = self.machine.signal_msi, self.ledger.record_send
        at_once = self.machine.msi_taken_at_once if self.fast_msi else None
        # The kernel's CPUs take interrupts at once while its online list stands (a
        # kernel that dies here replaces it).
        online = k.online_cpus
        takers = frozenset(online)
        nvec = dev.nvec
        vec = self._next_vector[device]
        # vector -> (its token, the CPU the kernel meant it for): nothing here maps IRQs
        plans: dict[int, tuple[_Token, int | None]] = {}
        for _ in range(msis):
            plan = plans.get(vec)
            if plan is None:
                desc = k.irq_of_vector.get((device, vec))
                plan = plans[vec] = (_Token(k.generation, device, vec), desc.cpu if desc else None)
            token, intended = plan
            taken = at_once(dev, vec, takers) if at_once and k.online_cpus is online else None
            if taken is not None:
                cpu, intid = taken
                record_send(token, _PENDED, cpu, intid, True, intended)
                k.generic_handle_domain_irq(cpu, intid)
                k.reap()
            else:
                result = signal(dev, vec)
                record_send(
                    token, result.outcome, result.cpu, result.intid, result.pended, intended
                )
                if result.cpu is not None and k.online_cpus:
                    k.handle_interrupts([result.cpu])
                    k.reap()
            vec = vec + 1 if vec + 1 < nvec else 0
        self._next_vector[device] = vec

    def _traffic_all(self, msis: int, generation: int, *, posted: bool = False) -> None:
        """Handover window: every device that still may signal sends (``posted``: every
        device's writes already on their way), nobody takes them."""
        for name, dev in self.machine.devices.items():
            for i in range(msis):
                vec = i % dev.nvec
                result = self.machine.signal_msi(dev, vec, posted=posted)
                if result.outcome.startswith("device not allowed"):
                    break
                self.ledger.record_send(
                    _Token(generation, name, vec),
                    result.outcome,
                    result.cpu,
                    result.intid,
                    result.pended,
                )

    def vmm_save(self) -> None:
        """The VMM saves the guest's GIC state (a snapshot or a migration): a hypervisor
        that holds LPI pending state writes it into the guest's pending tables now,
        wherever the redistributors point, which may be memory the guest no longer
        gave the GIC (GIC writes are judged as always)."""
        self.machine.vmm_save_pending_tables()

    def fill_page_cache(self, fraction: float) -> int:
        if self._halted("page-cache"):
            return 0
        return self.kernel.fill_page_cache(fraction)

    # -- observations ------------------------------------------------------------------------

    def memreserve_chain(self) -> MemreserveChain | None:
        """The chain as it is in memory now (read with the newest kernel's layout)."""
        if self.firmware is None:
            return None
        _, tables = read_config_tables(self.machine.mem, self.firmware.systab)
        root = next((t.table for t in tables if t.guid == LINUX_EFI_MEMRESERVE_TABLE_GUID), None)
        if root is None:
            return None
        layout = (
            self.generations[-1].profile.memreserve_layout if self.generations else None
        ) or "v5.0"
        return walk_memreserve(self.machine.mem.read, self.machine.mem.is_ram, root, layout)

    def _published_pages(self) -> list[tuple[int, int]]:
        chain = self.memreserve_chain()
        if chain is None:
            return []
        return chain.entries + [(n.addr, n.footprint) for n in chain.list_nodes]

    def _record_memreserve(self, k: Kernel) -> None:
        chain = self.memreserve_chain()
        while len(self.memreserve_after) < k.generation + 1:
            self.memreserve_after.append(None)
        self.memreserve_after[k.generation] = (
            (len(chain.list_nodes), len(chain.entries)) if chain is not None else None
        )

    def finish(self) -> None:
        """Close the books: classify MSIs still pending and record the final memreserve list."""
        if self.generations:
            self._record_memreserve(self.generations[-1])
        self.ledger.settle(self.machine)
