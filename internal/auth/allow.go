package auth

import (
	"context"
	"fmt"
	"path"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/ferryproxy/ferry/internal/config"
)

// who names callers by identity and role patterns (path.Match syntax,
// checked by config validation).
type who struct {
	identities, roles []string
}

// matches reports whether id is one of the callers named.
func (w who) matches(id *Identity) bool {
	if id == nil {
		return false
	}
	if anyMatch(w.identities, id.Name) {
		return true
	}
	for _, r := range id.Roles {
		if anyMatch(w.roles, r) {
			return true
		}
	}
	return false
}

// anyMatch reports whether name matches one of patterns.
func anyMatch(patterns []string, name string) bool {
	for _, p := range patterns {
		if ok, _ := path.Match(p, name); ok {
			return true
		}
	}
	return false
}

// describe names a caller in a refusal: its identity, which is not a
// secret, or "anonymous callers".
func describe(id *Identity) string {
	if id == nil {
		return "anonymous callers"
	}
	return fmt.Sprintf("identity %q", id.Name)
}

// Allow is who may call a route. The zero Allow lets every caller in.
type Allow struct {
	route string
	rules []who
}

// NewAllow returns the allow rules of the route named route.
func NewAllow(route string, rules []config.AllowRule) Allow {
	a := Allow{route: route}
	for _, r := range rules {
		a.rules = append(a.rules, who{r.Identities, r.Roles})
	}
	return a
}

// Check returns nil when the caller of ctx may call the route's method,
// else PERMISSION_DENIED naming the route and method.
func (a Allow) Check(ctx context.Context, method string) error {
	if len(a.rules) == 0 {
		return nil
	}
	id := FromContext(ctx)
	for _, w := range a.rules {
		if w.matches(id) {
			return nil
		}
	}
	return status.Errorf(codes.PermissionDenied, "route %q does not allow %s to call %s", a.route, describe(id), method)
}

// APIPolicy is what callers may do through the Kafka API, by topic and
// consumer group. A nil policy allows everything.
type APIPolicy struct {
	rules []apiRule
}

type apiRule struct {
	who
	produce, consume, groups, admin []string
}

// NewAPIPolicy returns the policy of the rules, nil when there are none.
func NewAPIPolicy(rules []config.APIAllowRule) *APIPolicy {
	if len(rules) == 0 {
		return nil
	}
	p := &APIPolicy{}
	for _, r := range rules {
		p.rules = append(p.rules, apiRule{who: who{r.Identities, r.Roles},
			produce: r.Produce, consume: r.Consume, groups: r.Groups, admin: r.Admin})
	}
	return p
}

// allows reports whether a rule naming the caller of ctx passes ok.
func (p *APIPolicy) allows(ctx context.Context, ok func(r *apiRule) bool) bool {
	if p == nil {
		return true
	}
	id := FromContext(ctx)
	for i := range p.rules {
		r := &p.rules[i]
		if r.matches(id) && ok(r) {
			return true
		}
	}
	return false
}

func denied(ctx context.Context, format string, args ...any) error {
	return status.Errorf(codes.PermissionDenied, "%s may not %s", describe(FromContext(ctx)), fmt.Sprintf(format, args...))
}

// Produce returns nil when the caller may produce to topic.
func (p *APIPolicy) Produce(ctx context.Context, topic string) error {
	if p.allows(ctx, func(r *apiRule) bool { return anyMatch(r.produce, topic) }) {
		return nil
	}
	return denied(ctx, "produce to topic %q", topic)
}

// Consume returns nil when the caller may consume topic in group (and
// acknowledge, and read and set the group's offsets of the topic).
func (p *APIPolicy) Consume(ctx context.Context, group, topic string) error {
	if p.allows(ctx, func(r *apiRule) bool { return anyMatch(r.consume, topic) && anyMatch(r.groups, group) }) {
		return nil
	}
	return denied(ctx, "consume topic %q in group %q", topic, group)
}

// Offsets returns nil when the caller may read and set the offsets of
// group on topic: as its consumer, or as an administrator of both.
func (p *APIPolicy) Offsets(ctx context.Context, group, topic string) error {
	if p.allows(ctx, func(r *apiRule) bool {
		return anyMatch(r.consume, topic) && anyMatch(r.groups, group) ||
			anyMatch(r.admin, topic) && anyMatch(r.admin, group)
	}) {
		return nil
	}
	return denied(ctx, "read or set the offsets of group %q on topic %q", group, topic)
}

// Describe returns nil when the caller may see the topic or group name:
// it may administer it, or use it otherwise.
func (p *APIPolicy) Describe(ctx context.Context, name string) error {
	if p.Visible(ctx, name) {
		return nil
	}
	return denied(ctx, "describe %q", name)
}

// Visible reports whether the caller may see the topic or group name in
// a list.
func (p *APIPolicy) Visible(ctx context.Context, name string) bool {
	return p.allows(ctx, func(r *apiRule) bool {
		return anyMatch(r.admin, name) || anyMatch(r.produce, name) || anyMatch(r.consume, name) || anyMatch(r.groups, name)
	})
}
