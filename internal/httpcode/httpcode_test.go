package httpcode

import (
	"net/http"
	"testing"

	"google.golang.org/grpc/codes"
)

// TestFromCode pins the table to vanguard's mapping, code by code.
func TestFromCode(t *testing.T) {
	for _, tc := range []struct {
		code codes.Code
		want int
	}{
		{codes.OK, http.StatusOK},
		{codes.Canceled, 499},
		{codes.Unknown, http.StatusInternalServerError},
		{codes.InvalidArgument, http.StatusBadRequest},
		{codes.DeadlineExceeded, http.StatusGatewayTimeout},
		{codes.NotFound, http.StatusNotFound},
		{codes.AlreadyExists, http.StatusConflict},
		{codes.PermissionDenied, http.StatusForbidden},
		{codes.ResourceExhausted, http.StatusTooManyRequests},
		{codes.FailedPrecondition, http.StatusBadRequest},
		{codes.Aborted, http.StatusConflict},
		{codes.OutOfRange, http.StatusBadRequest},
		{codes.Unimplemented, http.StatusNotImplemented},
		{codes.Internal, http.StatusInternalServerError},
		{codes.Unavailable, http.StatusServiceUnavailable},
		{codes.DataLoss, http.StatusInternalServerError},
		{codes.Unauthenticated, http.StatusUnauthorized},
		{codes.Code(17), http.StatusInternalServerError},
		{codes.Code(1 << 20), http.StatusInternalServerError},
	} {
		if got := FromCode(tc.code); got != tc.want {
			t.Errorf("FromCode(%v) = %d, want %d", tc.code, got, tc.want)
		}
	}
}
