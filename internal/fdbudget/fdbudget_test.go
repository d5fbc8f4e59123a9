package fdbudget

import (
	"sync"
	"testing"
)

func TestBudget(t *testing.T) {
	tests := []struct {
		name  string
		limit int
		takes []int
		want  []bool
		inUse int
	}{
		{"fits", 4, []int{2, 2}, []bool{true, true}, 4},
		{"refused beyond the limit", 3, []int{2, 2, 1}, []bool{true, false, true}, 3},
		{"negative limit refuses all", -5, []int{1}, []bool{false}, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b := New(tc.limit)
			for i, n := range tc.takes {
				if got := b.Acquire(n); got != tc.want[i] {
					t.Fatalf("Acquire(%d) #%d = %v, want %v", n, i, got, tc.want[i])
				}
			}
			if b.InUse() != tc.inUse {
				t.Fatalf("InUse = %d, want %d", b.InUse(), tc.inUse)
			}
		})
	}
}

func TestNilBudgetIsUnlimited(t *testing.T) {
	var b *Budget
	if !b.Acquire(1 << 20) {
		t.Fatal("nil budget refused")
	}
	b.Release(1 << 20)
	if b.Limit() != -1 || b.InUse() != 0 {
		t.Fatalf("nil budget: limit %d in use %d", b.Limit(), b.InUse())
	}
}

func TestBudgetConcurrent(t *testing.T) {
	b := New(100)
	var wg sync.WaitGroup
	var mu sync.Mutex
	got := 0
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 50 {
				if b.Acquire(1) {
					mu.Lock()
					got++
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	if got != 100 || b.InUse() != 100 {
		t.Fatalf("acquired %d (in use %d), want exactly 100", got, b.InUse())
	}
	for range 100 {
		b.Release(1)
	}
	if b.InUse() != 0 {
		t.Fatalf("in use %d after releasing all", b.InUse())
	}
}

func TestProcessLimit(t *testing.T) {
	n, err := ProcessLimit()
	if err != nil || n <= 0 {
		t.Fatalf("ProcessLimit = %d, %v", n, err)
	}
}
