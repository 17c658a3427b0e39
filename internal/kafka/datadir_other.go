//go:build !unix

package kafka

import (
	"fmt"
	"os"
)

// lockDataDir creates dir if missing. Without flock, it takes no lock:
// keeping to one Ferry per directory is the operator's task.
func lockDataDir(dir string) (unlock func(), err error) {
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("creating the data directory: %w", err)
	}
	return func() {}, nil
}
