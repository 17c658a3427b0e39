package ferryapi

import "testing"

// TestNumbersFitFloat64 checks which JSON values can be presented as a
// google.protobuf.Value without changing a number.
func TestNumbersFitFloat64(t *testing.T) {
	for v, want := range map[string]bool{
		`{"n":2,"x":[1.5,-3e2,0.1]}`:  true,
		`"text"`:                      true,
		`{"id":12345678901234567891}`: false, // beyond 2^53
		`[9007199254740993]`:          false,
		`{"a":{"b":1e400}}`:           false, // overflows
		`{"small":9007199254740992}`:  true,
		`null`:                        true,
	} {
		if got := numbersFitFloat64([]byte(v)); got != want {
			t.Errorf("%s: %v, want %v", v, got, want)
		}
	}
}
