package frame

import (
	"math/bits"
	"sync"

	"google.golang.org/grpc/mem"
)

// bufferPool is a mem.BufferPool of power-of-two size classes from 1 KiB
// to 16 MiB that hands buffers out as they were left. Codec marshals into
// it and the gRPC server reads requests through it: every byte of such a
// buffer is written before it is read, so clearing it, as grpc-go's default
// pool does, only costs — and its classes jump from 32 KiB to 1 MiB, so a
// 40 KiB message cleared a whole MiB on every use.
type bufferPool struct {
	classes [maxClass - minClass + 1]sync.Pool
}

const minClass, maxClass = 10, 24

var pool = new(bufferPool)

// Pool returns the buffer pool Codec marshals into, for the gRPC server to
// read requests through (grpc-go's experimental.BufferPool).
func Pool() mem.BufferPool { return pool }

var _ mem.BufferPool = (*bufferPool)(nil)

// Get returns a buffer of length n; its contents are arbitrary.
func (p *bufferPool) Get(n int) *[]byte {
	c := max(bits.Len(uint(n-1)), minClass)
	if n <= 0 || c > maxClass {
		b := make([]byte, n)
		return &b
	}
	if b, ok := p.classes[c-minClass].Get().(*[]byte); ok {
		*b = (*b)[:n]
		return b
	}
	b := make([]byte, n, 1<<c)
	return &b
}

// Put keeps a buffer that Get made for reuse; others are dropped.
func (p *bufferPool) Put(b *[]byte) {
	c := cap(*b)
	if c == 0 || c&(c-1) != 0 {
		return
	}
	class := bits.Len(uint(c)) - 1
	if class < minClass || class > maxClass {
		return
	}
	p.classes[class-minClass].Put(b)
}
