package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/quic-go/quic-go"
	"google.golang.org/protobuf/proto"

	agentv1 "github.com/casarerpa/casare/rpc/casare/agent/v1"
)

// Work-queue call limits. A robot runs a few jobs, each making one call at
// a time, so a handful of calls open at once is all an honest robot needs;
// the bound keeps one that floods the gateway with streams from holding
// more than MaxWorkItemCalls frames in memory or as many database
// transactions.
const (
	// MaxWorkItemCalls bounds the work-queue calls of one robot served at
	// once; a call over it is answered "resource_exhausted" at once.
	MaxWorkItemCalls = 16
	// workItemCallTimeout bounds the work of one call, answer included.
	workItemCallTimeout = 30 * time.Second
	// workItemWriteTimeout bounds the write of an answer to a robot that
	// does not read it.
	workItemWriteTimeout = 10 * time.Second
)

// Codes of the refusals the gateway makes itself; WorkItems makes the
// others.
const (
	codeUnimplemented     = "unimplemented"
	codeInvalidArgument   = "invalid_argument"
	codeResourceExhausted = "resource_exhausted"
	codeInternal          = "internal"
	codeUnavailable       = "unavailable"
)

// acceptCalls serves the bidirectional streams the robot opens after its
// control stream, one work-queue call each, until the connection ends.
// Calls run on goroutines of their own, so a slow one never holds up the
// control stream's heartbeats, and at most MaxWorkItemCalls at once.
func (g *Gateway) acceptCalls(ctx context.Context, sess *session, log *slog.Logger) {
	// Cancelled with the connection: a call of a robot that went away
	// has nobody to answer, and its transaction is better rolled back.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(sess.conn.Context(), cancel)
	defer stop()
	open := make(chan struct{}, MaxWorkItemCalls)
	var calls sync.WaitGroup
	defer calls.Wait()
	for {
		stream, err := sess.conn.AcceptStream(ctx)
		if err != nil {
			return
		}
		select {
		case open <- struct{}{}:
			calls.Go(func() {
				defer func() { <-open }()
				g.serveCall(ctx, sess.robotID, stream, log)
			})
		default:
			// Answered on a goroutine: the write may wait for flow
			// control. quic.Config's MaxIncomingStreams bounds how many
			// such streams, and so goroutines, exist at once.
			calls.Go(func() {
				answerCall(stream, refusal(codeResourceExhausted,
					fmt.Sprintf("too many work-queue calls open at once: the limit is %d a robot; wait for one to end", MaxWorkItemCalls)), log)
			})
		}
	}
}

// serveCall reads one WorkItemCall from stream, has WorkItems answer it
// and writes the answer.
func (g *Gateway) serveCall(ctx context.Context, robotID string, stream *quic.Stream, log *slog.Logger) {
	stream.SetReadDeadline(time.Now().Add(g.opts.WorkItemReadTimeout))
	call := &agentv1.WorkItemCall{}
	if err := agentv1.NewFrameReader(stream).Read(call); err != nil {
		var netErr interface{ Timeout() bool }
		msg := fmt.Sprintf("a work-queue call must be one WorkItemCall frame of at most %d bytes: %v", agentv1.MaxFrameSize, err)
		if errors.As(err, &netErr) && netErr.Timeout() {
			msg = fmt.Sprintf("no work-queue call arrived within %s", g.opts.WorkItemReadTimeout)
		}
		log.Debug("a work-queue stream refused", "reason", msg)
		answerCall(stream, refusal(codeInvalidArgument, msg), log)
		return
	}
	// Whatever else the robot sends on the stream is not read: dropping
	// the receive side frees the stream's flow-control credit at once.
	stream.CancelRead(0)
	answerCall(stream, g.call(ctx, robotID, call), log)
}

// call checks what the gateway can of a call and hands it to WorkItems.
func (g *Gateway) call(ctx context.Context, robotID string, call *agentv1.WorkItemCall) *agentv1.WorkItemResult {
	switch {
	case g.opts.WorkItems == nil:
		return refusal(codeUnimplemented, "this control plane serves no work queues")
	case call.GetJobId() == "":
		return refusal(codeInvalidArgument, "job_id: required")
	case call.GetAttempt() < 1:
		return refusal(codeInvalidArgument, "attempt: must be 1 or more")
	case call.GetOp() == nil:
		return refusal(codeInvalidArgument, "the call names no operation (add, next, complete, fail or progress)")
	}
	ctx, cancel := context.WithTimeout(ctx, workItemCallTimeout)
	defer cancel()
	res := g.opts.WorkItems.Call(ctx, robotID, call)
	switch {
	case res == nil:
		return refusal(codeInternal, "internal error")
	case ctx.Err() != nil && res.GetError() != "" && res.GetCode() != codeUnavailable:
		// Ended by the deadline or the connection, not by the call's
		// content: worth another try.
		return refusal(codeUnavailable, "the control plane did not answer in time; try again")
	}
	return res
}

// answerCall writes the answer and ends the stream. An answer over the
// frame limit is replaced by one that says so, so the robot never waits
// for an answer that cannot come.
func answerCall(stream *quic.Stream, res *agentv1.WorkItemResult, log *slog.Logger) {
	defer stream.CancelRead(0)
	if size := proto.Size(res); size > agentv1.MaxFrameSize {
		log.Warn("a work-queue answer is over the frame limit", "bytes", size, "limit", agentv1.MaxFrameSize)
		res = refusal(codeInternal, fmt.Sprintf("the answer is %d bytes, over the %d limit of a frame", size, agentv1.MaxFrameSize))
	}
	stream.SetWriteDeadline(time.Now().Add(workItemWriteTimeout))
	if err := agentv1.WriteFrame(stream, res); err != nil {
		log.Debug("a work-queue answer could not be written", "err", err)
		stream.CancelWrite(0)
		return
	}
	stream.Close()
}

func refusal(code, msg string) *agentv1.WorkItemResult {
	return &agentv1.WorkItemResult{Code: code, Error: msg}
}
