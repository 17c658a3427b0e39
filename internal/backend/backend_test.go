package backend

import (
	"testing"
)

// TestPartitionCommitOrder: the commit point is the first unfinished
// record, whatever order calls finish in.
func TestPartitionCommitOrder(t *testing.T) {
	p := newPartition("t", 0)
	for _, o := range []int64{10, 11, 12, 13, 14} {
		if !p.track(o) {
			t.Fatalf("track(%d) refused", o)
		}
	}
	if _, moved := p.commitPoint(); moved {
		t.Error("commit point moved before anything finished")
	}
	p.finish(12, 14) // later calls finish first: nothing to commit yet
	if _, moved := p.commitPoint(); moved {
		t.Error("commit point moved past an unfinished record")
	}
	p.finish(10)
	if at, moved := p.commitPoint(); !moved || at != 11 {
		t.Errorf("commit point = %d, %v; want 11", at, moved)
	}
	p.committedAt(11)
	if _, moved := p.commitPoint(); moved {
		t.Error("commit point moved without progress")
	}
	p.finish(11, 13)
	if at, moved := p.commitPoint(); !moved || at != 15 {
		t.Errorf("commit point = %d, %v; want 15 (all finished)", at, moved)
	}
	if p.track(14) {
		t.Error("an offset already passed was tracked again")
	}
	p.retire()
	if p.track(15) || p.addActive(1) {
		t.Error("a retired partition took a record or a call")
	}
	p.finish(15)
	if _, moved := p.commitPoint(); moved {
		t.Error("a retired partition reported a commit point")
	}
}

// TestIDSet: the set forgets its oldest ids past its bound, and a removed
// id neither counts nor is forgotten twice.
func TestIDSet(t *testing.T) {
	s := newIDSet(2)
	s.add("a")
	s.add("b")
	s.add("a")
	s.add("c") // evicts a, the oldest
	if s.has("a") || !s.has("b") || !s.has("c") {
		t.Errorf("ids = %v, want b and c", s.at)
	}
	s.remove("b")
	s.remove("x")
	if s.has("b") {
		t.Error("a removed id is still in the set")
	}
	s.add("d") // takes b's old slot
	s.add("e") // evicts c
	if s.has("c") || !s.has("d") || !s.has("e") || len(s.at) != 2 {
		t.Errorf("ids = %v, want d and e", s.at)
	}
}
