// Package httpcode is the one table of Ferry's REST faces that turns a
// gRPC status code into an HTTP status. It follows the mapping of
// vanguard (connectrpc.com/vanguard), which transcodes Ferry's own REST
// API, so a handler Ferry writes by hand answers what a transcoded one
// would.
package httpcode

import (
	"net/http"

	"google.golang.org/grpc/codes"
)

// StatusClientClosedRequest is the HTTP status of a request its client
// gave up on (gRPC's CANCELLED): nginx's 499, which vanguard and Connect
// use too. net/http has no name for it.
const StatusClientClosedRequest = 499

// table is indexed by code; it is vanguard's httpStatusCodeFromRPCIndex.
var table = [...]int{
	codes.OK:                 http.StatusOK,
	codes.Canceled:           StatusClientClosedRequest,
	codes.Unknown:            http.StatusInternalServerError,
	codes.InvalidArgument:    http.StatusBadRequest,
	codes.DeadlineExceeded:   http.StatusGatewayTimeout,
	codes.NotFound:           http.StatusNotFound,
	codes.AlreadyExists:      http.StatusConflict,
	codes.PermissionDenied:   http.StatusForbidden,
	codes.ResourceExhausted:  http.StatusTooManyRequests,
	codes.FailedPrecondition: http.StatusBadRequest,
	codes.Aborted:            http.StatusConflict,
	codes.OutOfRange:         http.StatusBadRequest,
	codes.Unimplemented:      http.StatusNotImplemented,
	codes.Internal:           http.StatusInternalServerError,
	codes.Unavailable:        http.StatusServiceUnavailable,
	codes.DataLoss:           http.StatusInternalServerError,
	codes.Unauthenticated:    http.StatusUnauthorized,
}

// FromCode returns the HTTP status of a gRPC code; a code gRPC does not
// define is 500 Internal Server Error.
func FromCode(c codes.Code) int {
	if int(c) >= len(table) {
		return http.StatusInternalServerError
	}
	return table[c]
}
