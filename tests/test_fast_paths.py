"""The fast paths against the reference path.

Two worlds run the same steps: one with every fast path off (``Its.translation_cache``,
``World.batch_traffic``, ``World.fast_msi``, ``PhysicalMemory.direct_bits``,
``CorruptionMonitor.page_cache``: every MSI walks the tables and goes through the full
path one at a time, pending bits are read then written, every changed bit is judged), one
with all of them on.  After every
step their memory bytes, the last writer of every page, the redistributors' and CPU
interfaces' state, the ITS, the MSI ledger, the corruption report, guest errors, kernel
logs and per-IRQ counts must be equal.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from gickexec import World
from gickexec.arch.gicv3 import GitsOffset
from gickexec.hw.cpuif import IccReg
from gickexec.hw.its import Its
from gickexec.hw.memory import Agent, AgentKind, BusFault, MemRegion, PhysicalMemory
from gickexec.hw.platform import PLATFORMS, Platform
from gickexec.kernel.mm import Owner, Role
from gickexec.scenario.builtin import builtin_names, load_builtin
from gickexec.scenario.runner import run_scenario
from gickexec.scenario.world import CorruptionMonitor, KernelJudge

NVEC = 4
DEVICE_ID = 0x100


def _world(platform: str | Platform, *, fast: bool, profile: str = "v6.6") -> World:
    w = World.build(platform, seed=3)
    w.batch_traffic = fast
    w.fast_msi = fast
    w.machine.mem.direct_bits = fast
    w.corruption.page_cache = fast
    w.add_device("eth0", device_id=DEVICE_ID, nvec=NVEC)
    w.boot(profile)
    _set_cache(w, fast)
    return w


def _set_cache(w: World, fast: bool) -> None:
    # A power-on (boot) builds a new ITS; the reference world keeps its cache off.
    w.machine.its.translation_cache = fast


def observables(w: World) -> dict[str, Any]:
    """Everything the fast paths must leave as the reference path does."""
    m = w.machine
    mem = m.mem
    pages = {}
    for region in mem.ram:
        for pfn in mem.nonzero_pages(region.start, region.size):
            data = mem.read(pfn << 12, 4096)
            if any(data):
                pages[pfn] = data
    led = w.ledger
    return {
        "pages": pages,
        "last_writer": dict(mem.last_writer),
        "rdists": [rd.state_key() for rd in m.rdists],
        "cpuifs": [c.state_key() for c in m.cpuifs],
        "its": (m.its.enabled, m.its.creadr, m.its.stalled, m.its.commands_executed),
        "events": (list(m.events.errors), m.events.dropped),
        "ledger": (
            led.sent,
            led.delivered,
            dict(led.lost_reasons),
            dict(led.lost_per_cpu),
            dict(led.delivered_per_cpu),
            dict(led.sent_per_generation),
            dict(led.delivered_per_generation),
            {key: list(tokens) for key, tokens in led._pending.items() if tokens},
        ),
        "corruption": (w.corruption.bits, list(w.corruption.events)),
        "notes": list(w.notes),
        "kernels": [
            (
                list(k.log.lines),
                k.crashed,
                k.unexpected_irqs,
                {hwirq: dict(d.counts) for hwirq, d in k.irqs.items()},
                list(k.gic_hits),
            )
            for k in w.generations
        ],
    }


class FastEqualsReference(RuleBasedStateMachine):
    """Random traffic interleaved with ITS commands, table writes and kexecs."""

    platform: str | Platform = "efi-server-8"

    def __init__(self) -> None:
        super().__init__()
        self.ref = _world(self.platform, fast=False)
        self.fast = _world(self.platform, fast=True)

    def both(self) -> tuple[World, World]:
        return self.ref, self.fast

    def _its_dev(self, w: World) -> Any:
        drivers = w.kernel.drivers
        return drivers[0].its_dev if drivers else None

    def _alive(self) -> bool:
        k = self.ref.kernel
        return k.crashed is None and self._its_dev(self.ref) is not None

    @rule(msis=st.integers(0, 5 * NVEC), batched=st.booleans())
    def traffic(self, msis: int, batched: bool) -> None:
        """A short burst, batched or not (unbatched: every MSI tries the one-step path)."""
        self.fast.batch_traffic = batched
        for w in self.both():
            w.traffic("eth0", msis)
        self.fast.batch_traffic = True

    @rule(msis=st.integers(100, 5000))
    def long_burst(self, msis: int) -> None:
        for w in self.both():
            w.traffic("eth0", msis)

    @precondition(_alive)
    @rule(vec=st.integers(0, NVEC - 1), cpu=st.integers(0, 7))
    def movi(self, vec: int, cpu: int) -> None:
        for w in self.both():
            w.kernel.gic.its_set_affinity(self._its_dev(w), vec, cpu)

    @precondition(_alive)
    @rule(vec=st.integers(0, NVEC - 1), enable=st.booleans())
    def lpi_config(self, vec: int, enable: bool) -> None:
        """Property table write + INV; a disabled LPI stays pending (no steady rounds)."""
        for w in self.both():
            w.kernel.gic.lpi_update_config(self._its_dev(w), vec, enable)

    @precondition(_alive)
    @rule(vec=st.integers(0, NVEC - 1), value=st.integers(0, (1 << 64) - 1))
    def itt_write(self, vec: int, value: int) -> None:
        """Software scribbles over an ITT entry without any command."""
        for w in self.both():
            dev = self._its_dev(w)
            addr = dev.itt + vec * w.machine.its.knobs.itt_entry_size
            w.machine.mem.write_u64(addr, value, w.kernel.agent())

    @precondition(_alive)
    @rule(vec=st.integers(0, NVEC - 1), value=st.integers(0, 255))
    def pending_write(self, vec: int, value: int) -> None:
        """Software writes a byte of a pending table (bits of the device's LPIs)."""
        for w in self.both():
            rd = w.machine.rdists[vec % len(w.machine.rdists)]
            if rd.pend_addr is not None:
                hwirq = self._its_dev(w).lpi_base + vec
                w.machine.mem.write_u8(rd.pend_addr + hwirq // 8, value, w.kernel.agent())

    @precondition(_alive)
    @rule(
        cpu=st.integers(0, 7),
        size=st.sampled_from([0x800, 0x1000, 0x2000]),
        owner=st.sampled_from(
            [None, Owner("page cache"), Owner("LPI pending table", Role("pend", 1))]
        ),
    )
    def reown_pending_table(self, cpu: int, size: int, owner: Owner | None) -> None:
        """The kernel frees or gives away (part of) a pending table the redistributor
        still uses: its pages change owner under the cached judgements."""
        for w in self.both():
            rd = w.machine.rdists[cpu % len(w.machine.rdists)]
            if rd.pend_addr is not None:
                w.kernel.owners.assign(rd.pend_addr, size, owner)

    @rule(pmr=st.sampled_from([0x00, 0x90, 0xA0, 0xB0, 0xF0]))
    def pmr(self, pmr: int) -> None:
        """ICC_PMR_EL1 of every CPU at, above or below the LPIs' priority (0xa0)."""
        for w in self.both():
            for cpuif in w.machine.cpuifs:
                cpuif.msr(IccReg.PMR, pmr)

    @rule(cpu=st.integers(0, 7), enable=st.booleans())
    def igrpen1(self, cpu: int, enable: bool) -> None:
        for w in self.both():
            w.machine.cpuifs[cpu % len(w.machine.cpuifs)].msr(IccReg.IGRPEN1, int(enable))

    @rule(enable=st.booleans())
    def gits_ctlr(self, enable: bool) -> None:
        for w in self.both():
            base = w.platform.its_base + GitsOffset.CTLR
            w.machine.mem.mmio_write(base, 4, int(enable), Agent(AgentKind.KERNEL, 0, 0))

    @rule(profile=st.sampled_from(["v6.6", "v4.19"]), msis=st.integers(0, 6))
    def kexec(self, profile: str, msis: int) -> None:
        for w in self.both():
            w.kexec(profile, handover_msis=msis)

    @rule(cpu=st.integers(1, 7))
    def cpu_down(self, cpu: int) -> None:
        for w in self.both():
            w.cpu_down(cpu)

    @invariant()
    def same_state(self) -> None:
        assert observables(self.fast) == observables(self.ref)


class FastEqualsReferenceQemu(FastEqualsReference):
    """QEMU virt: no configuration cache, 12-byte ITT entries (entries across pages)."""

    platform = "qemu-virt"


class FastEqualsReferenceKvm(FastEqualsReference):
    """A KVM guest: the hypervisor holds the pending state."""

    platform = "kvm-guest"


class FastEqualsReferencePendingCache(FastEqualsReference):
    """A redistributor that caches two pending LPIs before writing them back."""

    platform = dataclasses.replace(
        PLATFORMS["efi-server-8"],
        knobs=dataclasses.replace(PLATFORMS["efi-server-8"].knobs, pending_cache_entries=2),
    )


TestFastEqualsReference = FastEqualsReference.TestCase
TestFastEqualsReference.settings = settings(max_examples=60, stateful_step_count=15, deadline=None)
TestFastEqualsReferenceKvm = FastEqualsReferenceKvm.TestCase
TestFastEqualsReferenceKvm.settings = settings(
    max_examples=20, stateful_step_count=15, deadline=None
)
TestFastEqualsReferencePendingCache = FastEqualsReferencePendingCache.TestCase
TestFastEqualsReferencePendingCache.settings = settings(
    max_examples=20, stateful_step_count=15, deadline=None
)
TestFastEqualsReferenceQemu = FastEqualsReferenceQemu.TestCase
TestFastEqualsReferenceQemu.settings = settings(
    max_examples=30, stateful_step_count=15, deadline=None
)


def test_long_burst_is_batched_and_exact() -> None:
    """A million MSIs go through whole rounds: the counters equal 10**6 deliveries."""
    w = _world("efi-server-8", fast=True)
    calls = 0
    its = w.machine.its
    translate = its.translate_msi

    def counting(device_id: int, event_id: int) -> Any:
        nonlocal calls
        calls += 1
        return translate(device_id, event_id)

    its.translate_msi = counting  # type: ignore[method-assign]
    w.traffic("eth0", 10**6 + 3)
    w.finish()
    assert calls < 4 * NVEC  # two rounds and the remainder, not a million
    assert w.ledger.sent == w.ledger.delivered == 10**6 + 3
    assert sum(w.ledger.delivered_per_cpu.values()) == 10**6 + 3
    counts = [sum(d.counts.values()) for d in w.kernel.irqs.values()]
    assert sorted(counts) == [250000, 250001, 250001, 250001]


def test_stuck_lpi_falls_back_to_one_at_a_time() -> None:
    """With one LPI disabled the rounds are not steady: the batched path must notice."""
    ref, fast = _world("efi-server-8", fast=False), _world("efi-server-8", fast=True)
    for w in (ref, fast):
        dev = w.kernel.drivers[0].its_dev
        w.kernel.gic.lpi_update_config(dev, 2, False)
        w.traffic("eth0", 1000)
        w.finish()
    assert fast.ledger.lost > 0
    assert observables(fast) == observables(ref)


def test_one_step_msi_leaves_the_ranking_to_the_reference() -> None:
    """An LPI stuck pending whose bit software then cleared is a stale candidate: the
    next arrival at that redistributor goes through the acknowledge's ranking, which
    drops it, not through the one-step path (which would leave it)."""
    ref, fast = _world("efi-server-8", fast=False), _world("efi-server-8", fast=True)
    for w in (ref, fast):
        w.batch_traffic = False
        dev = w.kernel.drivers[0].its_dev
        w.kernel.gic.its_set_affinity(dev, 0, 0)
        w.kernel.gic.its_set_affinity(dev, NVEC - 1, 0)
        w.kernel.gic.lpi_update_config(dev, NVEC - 1, False)
        # translations cached (every command drops them), pending pages quiet, the
        # last vector stays pending
        w.traffic("eth0", NVEC)
        rd = w.machine.rdists[0]
        stuck = dev.lpi_base + NVEC - 1
        assert rd.pend_addr is not None and rd.pending == {stuck}
        w.machine.mem.write_u8(rd.pend_addr + stuck // 8, 0, w.kernel.agent())
        w.traffic("eth0", 1)  # vector 0, on CPU 0 as well
        assert rd.pending == set()
    assert observables(fast) == observables(ref)


def test_one_step_msis_are_taken_in_one_step() -> None:
    """Unbatched traffic in the steady state goes through ``msi_taken_at_once``."""
    w = _world("efi-server-8", fast=True)
    w.batch_traffic = False
    w.traffic("eth0", 2 * NVEC)
    taken = []
    one_step = w.machine.msi_taken_at_once

    def spy(*args: Any) -> Any:
        taken.append(one_step(*args))
        return taken[-1]

    w.machine.msi_taken_at_once = spy  # type: ignore[method-assign]
    w.traffic("eth0", 100)
    assert len(taken) == 100 and None not in taken
    assert w.ledger.delivered == w.ledger.sent == 2 * NVEC + 100


def test_table_write_without_command_reaches_the_cached_translation() -> None:
    """A cached translation is dropped when software rewrites the ITE in memory."""
    w = _world("efi-server-8", fast=True)
    its = w.machine.its
    first = its.translate_msi(DEVICE_ID, 1)
    assert first.pended
    w.kernel.handle_interrupts()
    dev = w.kernel.drivers[0].its_dev
    w.machine.mem.write_u64(dev.itt + its.knobs.itt_entry_size, 0, w.kernel.agent())
    assert its.translate_msi(DEVICE_ID, 1).outcome == "EventID not mapped"


@pytest.mark.parametrize("offset", [GitsOffset.CTLR, GitsOffset.BASER, GitsOffset.CWRITER])
def test_register_writes_drop_the_translation_cache(offset: int) -> None:
    w = _world("efi-server-8", fast=True)
    its = w.machine.its
    assert its.translate_msi(DEVICE_ID, 0).pended
    assert its._translations
    value = its.read_reg(offset, 8)
    w.machine.mem.mmio_write(w.platform.its_base + offset, 8, value, w.kernel.agent())
    assert not its._translations


def test_a_foreign_observer_sees_every_gic_write() -> None:
    """Batching elides writes that cancel out; with another observer it must not."""
    w = _world("efi-server-8", fast=True)
    seen = []
    w.machine.mem.observe_gic_writes(seen.append)
    w.traffic("eth0", 1000)
    assert len(seen) == 2 * 1000  # each MSI: pending bit set, then cleared by the ack


def test_device_without_vectors_sends_nothing() -> None:
    w = World.build("efi-server-8", seed=1)
    w.add_device("nvec0", device_id=0x200, nvec=0)
    w.boot("v6.6")
    w.traffic("nvec0", 0)
    assert w.ledger.sent == 0


@pytest.mark.parametrize("name", builtin_names())
def test_builtin_scenario_results_equal_the_reference_path(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every built-in scenario's result document, with and without the fast paths."""
    fast = run_scenario(load_builtin(name))
    monkeypatch.setattr(Its, "translation_cache", False)
    monkeypatch.setattr(World, "batch_traffic", False)
    monkeypatch.setattr(World, "fast_msi", False)
    monkeypatch.setattr(PhysicalMemory, "direct_bits", False)
    monkeypatch.setattr(CorruptionMonitor, "default_page_cache", False)
    assert run_scenario(load_builtin(name)) == fast


def test_power_on_drops_the_old_its_watches() -> None:
    """A boot builds a new ITS; the old one's memory watches must not pile up."""
    w = _world("efi-server-8", fast=True)
    w.traffic("eth0", NVEC)
    old = w.machine.its
    assert old._translations
    w.boot("v6.6")
    assert not any(old.invalidate_translations in cbs for cbs in w.machine.mem._watches.values())


def test_turning_the_cache_off_bypasses_cached_translations() -> None:
    """With translation_cache off every MSI walks, whatever the cache still holds."""
    w = _world("efi-server-8", fast=True)
    its = w.machine.its
    first = its.translate_msi(DEVICE_ID, 1)
    w.kernel.handle_interrupts()
    rd, intid = its._translations[(DEVICE_ID, 1)]
    its._translations[(DEVICE_ID, 1)] = (rd, intid + 1)  # a poisoned entry
    its.translation_cache = False
    assert its.translate_msi(DEVICE_ID, 1) == first


_RAM = (MemRegion(0x10000, 0x3000), MemRegion(0x20000, 0x1000))
_BIT_ADDRS = st.integers(0xF000, 0x22000)  # in, between and beyond the RAM regions
_GICR = Agent(AgentKind.GICR, 1)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["bit", "u8", "fill", "watch"]),
            _BIT_ADDRS,
            st.integers(0, 255),
            st.booleans(),
        ),
        max_size=40,
    )
)
def test_write_bit_equals_read_then_write(ops: list[tuple[str, int, int, bool]]) -> None:
    """``write_bit`` against ``read_u8`` + ``write_u8``: same bytes, last writers, answers,
    faults, observed writes and watch firings, on present, absent and released pages."""
    runs = []
    for direct in (False, True):
        mem = PhysicalMemory(_RAM)
        mem.direct_bits = direct
        seen: list[object] = []
        mem.observe_gic_writes(seen.append)
        for op, addr, value, flag in ops:
            try:
                if op == "bit":
                    mask = 1 << (value & 7)
                    seen.append(mem.write_bit(addr, mask, flag, _GICR))
                elif op == "u8":
                    mem.write_u8(addr, value, _GICR if flag else Agent(AgentKind.KERNEL))
                elif op == "fill":
                    mem.fill(addr & ~0xFFF, 0x1000, 0, Agent(AgentKind.KERNEL))
                else:
                    mem.watch_pages([addr >> 12], lambda a=addr, s=seen: s.append(("watch", a)))
            except BusFault as fault:
                seen.append(("fault", str(fault)))
        pages = {r.start: mem.read(r.start, r.size) for r in _RAM}
        runs.append((pages, dict(mem.last_writer), seen))
    assert runs[0] == runs[1]


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(0, 1),
            st.integers(0, 0x2FFF),
            st.integers(0, 511),
            st.sampled_from(["keep", "free", "page cache", "pend", "its"]),
        ),
        max_size=30,
    )
)
def test_page_judgements_equal_bit_judgements(ops: list[tuple[int, int, int, str]]) -> None:
    """A monitor judging per page and one judging every bit see the same GIC writes (the
    redistributors' and the ITS's, in their tables and around them) while the kernel's
    ownership changes under them: the same corruption, bit for bit."""
    w = _world("efi-server-8", fast=True)
    k = w.kernel
    monitors = [w.corruption, CorruptionMonitor()]
    monitors[1].judge = KernelJudge(k)
    monitors[1].page_cache = False
    w.machine.mem.observe_gic_writes(monitors[1].on_write)
    rds = w.machine.rdists
    for cpu, offset, value, owner in ops:
        rd = rds[cpu]
        assert rd.pend_addr is not None
        addr = rd.pend_addr - 0x1000 + offset  # the page below the table, and into it
        if owner != "keep":
            role = {"pend": Role("pend", cpu), "its": Role("its", 0)}.get(owner)
            label = None if owner == "free" else Owner(owner, role)
            k.owners.assign(addr & ~0x7FF, 0x800, label)
        agent = rd.agent if value & 256 else w.machine.its.agent
        w.machine.mem.write(addr, bytes([value & 255, ~value & 255]), agent)
    fast, ref = monitors
    assert (fast.bits, fast.events) == (ref.bits, ref.events)
