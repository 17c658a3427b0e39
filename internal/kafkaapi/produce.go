package kafkaapi

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"go.opentelemetry.io/otel/attribute"
	otelcodes "go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/ferryproxy/ferry/internal/kafka"
	"github.com/ferryproxy/ferry/internal/layout"
	"github.com/ferryproxy/ferry/internal/tracing"
)

// Produce writes r to topic and returns once Kafka acknowledged it.
func (s *Service) Produce(ctx context.Context, cluster, topic string, r Record) (Result, error) {
	if err := s.allowProduce(ctx, topic); err != nil {
		return Result{}, err
	}
	type answer struct {
		res Result
		err error
	}
	ch := make(chan answer, 1)
	done := traceProduce(ctx, topic, &r, func(res Result, err error) { ch <- answer{res, err} })
	if err := s.produceAsync(cluster, topic, r, done, false); err != nil {
		return Result{}, err
	}
	// The record is not withdrawn when ctx ends: franz-go may have sent it
	// already. The caller learns it was cancelled, not that it was lost.
	select {
	case a := <-ch:
		return a.res, a.err
	case <-ctx.Done():
		return Result{}, status.FromContextError(ctx.Err()).Err()
	}
}

// ProduceAsync starts writing r and calls done once Kafka answered; done
// runs on a franz-go goroutine and must not block. Records of one caller
// keep their order per partition. An error validating r is returned at
// once and done is not called. The record does not depend on its caller:
// once handed over it is written and answered even if the caller is gone.
// While the producer's buffer is full (clusters[].producer
// .max_buffered_records), ProduceAsync waits: backpressure.
func (s *Service) ProduceAsync(ctx context.Context, cluster, topic string, r Record, done func(Result, error)) error {
	if err := s.allowProduce(ctx, topic); err != nil {
		return err
	}
	return s.produceAsync(cluster, topic, r, traceProduce(ctx, topic, &r, done), false)
}

// traceProduce starts a "produce <topic>" span for r when the call in ctx
// is traced, and returns done wrapped to end it with Kafka's answer.
// Unless r carries a trace context of its own (a traceparent header its
// producer wrote), the record carries the span's, so that whoever consumes
// it continues the call's trace. Untraced, it returns done as it is.
func traceProduce(ctx context.Context, topic string, r *Record, done func(Result, error)) func(Result, error) {
	sctx, sp := tracing.Start(ctx, "produce "+topic, trace.SpanKindProducer,
		attribute.String("messaging.system", "kafka"),
		attribute.String("messaging.operation.type", "send"),
		attribute.String("messaging.destination.name", topic))
	if sp == nil {
		return done
	}
	if layout.RecordTrace(r.Headers).Parent == "" {
		r.Headers = layout.AppendReplyTrace(slices.Clip(r.Headers), tracing.Of(sctx))
	}
	return func(res Result, err error) {
		if err != nil {
			sp.SetStatus(otelcodes.Error, err.Error())
		} else {
			sp.SetAttributes(attribute.Int("messaging.destination.partition.id", int(res.Partition)), attribute.Int64("messaging.kafka.offset", res.Offset))
		}
		sp.End()
		done(res, err)
	}
}

// allowProduce checks the policy for producing to topic.
func (s *Service) allowProduce(ctx context.Context, topic string) error {
	p := s.currentPolicy()
	if p == nil {
		return nil
	}
	return p.Produce(ctx, topic)
}

// ProduceDetached starts writing r for a caller that does not wait for
// the answer (Ferry's and Kafka-Pixy's async produce): a record Kafka
// refuses is logged, as nobody else learns of it. Otherwise it is
// ProduceAsync.
func (s *Service) ProduceDetached(ctx context.Context, cluster, topic string, r Record) error {
	return s.ProduceAsync(ctx, cluster, topic, r, func(_ Result, err error) {
		if err != nil {
			s.logger.Warn("asynchronous produce failed", "cluster", cluster, "topic", topic, "err", err)
		}
	})
}

// produceAsync is ProduceAsync; with try, a full producer buffer fails the
// record at once (kgo.ErrMaxBuffered) instead of blocking.
func (s *Service) produceAsync(cluster, topic string, r Record, done func(Result, error), try bool) error {
	if err := CheckTopic(topic); err != nil {
		return err
	}
	c, p, err := s.producer(cluster)
	if err != nil {
		return err
	}
	if d := c.DeliveryTimeout(); d > 0 && !r.Timestamp.IsZero() && time.Since(r.Timestamp) > d/2 {
		if p, err = c.BackdatedProducer(kafka.Acks(s.Config().Produce.Acks)); err != nil {
			return status.Error(codes.Unavailable, err.Error())
		}
	}
	rec := &kgo.Record{Topic: topic, Key: r.Key, Value: r.Value, Headers: r.Headers, Timestamp: r.Timestamp}
	// The record gets a context of its own, not its caller's: it must not
	// fail when the caller ends. (A short one, too: the partitioner looks
	// up the explicit partition in it for every record.)
	pctx := context.Background()
	if r.Partition >= 0 {
		pctx = kafka.WithPartition(pctx, r.Partition)
	}
	produce := p.Produce
	if try {
		produce = p.TryProduce
	}
	produce(pctx, rec, func(rec *kgo.Record, err error) {
		if err != nil {
			if r.Partition >= 0 && !isKafkaErr(err) {
				// franz-go refuses a partition the topic lacks before
				// any broker sees the record.
				done(Result{}, status.Errorf(codes.InvalidArgument, "topic %q on cluster %q: partition %d: %v", topic, c.Name(), r.Partition, err))
				return
			}
			done(Result{}, kafkaErr(fmt.Sprintf("producing to topic %q on cluster %q", topic, c.Name()), err))
			return
		}
		done(Result{Partition: rec.Partition, Offset: rec.Offset, Timestamp: rec.Timestamp}, nil)
	})
	return nil
}

// isKafkaErr reports whether err came from a broker or the delivery
// machinery rather than from franz-go refusing the record up front.
func isKafkaErr(err error) bool {
	var ke *kerr.Error
	return errors.As(err, &ke) || errors.Is(err, kgo.ErrRecordTimeout) || errors.Is(err, kgo.ErrRecordRetries) ||
		errors.Is(err, kgo.ErrMaxBuffered) || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)
}

// producer returns the cluster and its producer for the API's acks. The
// cluster's producer lookup takes no lock once the producer exists, so it
// is called for every record.
func (s *Service) producer(cluster string) (*kafka.Cluster, *kgo.Client, error) {
	c, err := s.cluster(cluster)
	if err != nil {
		return nil, nil, err
	}
	p, err := c.Producer(kafka.Acks(s.Config().Produce.Acks))
	if err != nil {
		return nil, nil, status.Error(codes.Unavailable, err.Error())
	}
	return c, p, nil
}
