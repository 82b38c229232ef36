package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strings"

	"connectrpc.com/connect/v2"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	casarev1 "github.com/casarerpa/casare/rpc/casare/v1"
	"github.com/casarerpa/casare/server/auth"
	"github.com/casarerpa/casare/server/event"
	"github.com/casarerpa/casare/server/registry"
)

// CreateSubscription stores a subscription and returns its signing secret,
// which reads never show again.
func (s *webhookService) CreateSubscription(ctx context.Context, req *casarev1.CreateSubscriptionRequest) (*casarev1.CreateSubscriptionResponse, error) {
	in := req.GetSubscription()
	auth.SetAuditTarget(ctx, "subscription/"+in.GetName())
	if err := checkReceiverURL(in.GetUrl()); err != nil {
		return nil, invalid("subscription.url", "%v", err)
	}
	secret := event.NewSecret()
	sub := &registry.Subscription{
		ID:           registry.NewID(),
		Name:         in.GetName(),
		URL:          in.GetUrl(),
		EventTypes:   registry.JoinEventTypes(in.GetEventTypes()),
		WorkflowName: in.GetWorkflowName(),
		Secret:       secret,
		Enabled:      true,
		CreatedBy:    actor(ctx),
	}
	// The secret stays out of the audit log like everything else it could
	// be read from.
	audit := auth.AuditEvent(ctx, "subscription/"+sub.ID, map[string]any{"name": sub.Name, "url": sub.URL, "event_types": in.GetEventTypes(),
		"workflow_name": sub.WorkflowName})
	err := s.reg.CreateSubscription(ctx, sub, audit)
	if errors.Is(err, registry.ErrAlreadyExists) {
		return nil, connect.Errorf(connect.CodeAlreadyExists, "subscription.name: a subscription named %q exists; delete it first or pick another name", in.GetName())
	}
	if err != nil {
		return nil, toConnect(err)
	}
	return &casarev1.CreateSubscriptionResponse{Subscription: subscriptionToProto(sub), Secret: secret}, nil
}

// checkReceiverURL accepts an absolute http or https URL with a host.
func checkReceiverURL(raw string) error {
	u, err := url.Parse(raw)
	switch {
	case err != nil:
		return errors.New("not a URL")
	case u.Scheme != "http" && u.Scheme != "https":
		return fmt.Errorf("scheme %q: want http or https", u.Scheme)
	case u.Host == "" || u.Hostname() == "":
		return errors.New("no host")
	case u.User != nil:
		return errors.New("must not carry credentials; the receiver checks the signature instead")
	case u.Fragment != "":
		return errors.New("must not have a fragment")
	}
	return nil
}

func (s *webhookService) GetSubscription(ctx context.Context, req *casarev1.GetSubscriptionRequest) (*casarev1.GetSubscriptionResponse, error) {
	sub, err := s.subscription(ctx, req.GetName())
	if err != nil {
		return nil, err
	}
	return &casarev1.GetSubscriptionResponse{Subscription: subscriptionToProto(sub)}, nil
}

// subscription reads the subscription with the id or name, not found
// naming it.
func (s *webhookService) subscription(ctx context.Context, name string) (*registry.Subscription, error) {
	sub, err := s.reg.GetSubscription(ctx, name)
	if errors.Is(err, registry.ErrNotFound) {
		return nil, connect.Errorf(connect.CodeNotFound, "subscription %q not found", name)
	}
	if err != nil {
		return nil, toConnect(err)
	}
	return sub, nil
}

func (s *webhookService) ListSubscriptions(ctx context.Context, req *casarev1.ListSubscriptionsRequest) (*casarev1.ListSubscriptionsResponse, error) {
	subs, next, err := s.reg.ListSubscriptions(ctx, registry.Page{Size: int(req.GetPageSize()), Token: req.GetPageToken()})
	if err != nil {
		return nil, toConnect(err)
	}
	res := &casarev1.ListSubscriptionsResponse{Subscriptions: make([]*casarev1.Subscription, len(subs)), NextPageToken: next}
	for i := range subs {
		res.Subscriptions[i] = subscriptionToProto(&subs[i])
	}
	return res, nil
}

func (s *webhookService) DeleteSubscription(ctx context.Context, req *casarev1.DeleteSubscriptionRequest) (*casarev1.DeleteSubscriptionResponse, error) {
	auth.SetAuditTarget(ctx, "subscription/"+req.GetName())
	sub, err := s.reg.DeleteSubscription(ctx, req.GetName(), func(sub *registry.Subscription) *registry.AuditEvent {
		return auth.AuditEvent(ctx, "subscription/"+sub.ID, map[string]any{"name": sub.Name})
	})
	if errors.Is(err, registry.ErrNotFound) {
		return nil, connect.Errorf(connect.CodeNotFound, "subscription %q not found", req.GetName())
	}
	if err != nil {
		return nil, toConnect(err)
	}
	return &casarev1.DeleteSubscriptionResponse{Subscription: subscriptionToProto(sub)}, nil
}

// UpdateSubscription replaces a subscription's URL, event types and
// workflow filter.
func (s *webhookService) UpdateSubscription(ctx context.Context, req *casarev1.UpdateSubscriptionRequest) (*casarev1.UpdateSubscriptionResponse, error) {
	in := req.GetSubscription()
	auth.SetAuditTarget(ctx, "subscription/"+in.GetName())
	if err := checkReceiverURL(in.GetUrl()); err != nil {
		return nil, invalid("subscription.url", "%v", err)
	}
	types := registry.JoinEventTypes(in.GetEventTypes())
	sub, err := s.reg.UpdateSubscription(ctx, in.GetName(),
		registry.SubscriptionChange{URL: new(in.GetUrl()), EventTypes: &types, WorkflowName: new(in.GetWorkflowName())},
		func(sub *registry.Subscription) *registry.AuditEvent {
			return auth.AuditEvent(ctx, "subscription/"+sub.ID, map[string]any{"name": sub.Name, "url": in.GetUrl(),
				"event_types": in.GetEventTypes(), "workflow_name": in.GetWorkflowName()})
		})
	if errors.Is(err, registry.ErrNotFound) {
		return nil, connect.Errorf(connect.CodeNotFound, "subscription %q not found", in.GetName())
	}
	if err != nil {
		return nil, toConnect(err)
	}
	return &casarev1.UpdateSubscriptionResponse{Subscription: subscriptionToProto(sub)}, nil
}

func (s *webhookService) SetSubscriptionEnabled(ctx context.Context, req *casarev1.SetSubscriptionEnabledRequest) (*casarev1.SetSubscriptionEnabledResponse, error) {
	auth.SetAuditTarget(ctx, "subscription/"+req.GetName())
	sub, err := s.reg.UpdateSubscription(ctx, req.GetName(), registry.SubscriptionChange{Enabled: new(req.GetEnabled())},
		func(sub *registry.Subscription) *registry.AuditEvent {
			return auth.AuditEvent(ctx, "subscription/"+sub.ID, map[string]any{"name": sub.Name, "enabled": req.GetEnabled()})
		})
	if errors.Is(err, registry.ErrNotFound) {
		return nil, connect.Errorf(connect.CodeNotFound, "subscription %q not found", req.GetName())
	}
	if err != nil {
		return nil, toConnect(err)
	}
	s.wakeDeliveries()
	return &casarev1.SetSubscriptionEnabledResponse{Subscription: subscriptionToProto(sub)}, nil
}

// TestSubscription queues a ping event for the subscription alone.
func (s *webhookService) TestSubscription(ctx context.Context, req *casarev1.TestSubscriptionRequest) (*casarev1.TestSubscriptionResponse, error) {
	auth.SetAuditTarget(ctx, "subscription/"+req.GetName())
	sub, err := s.subscription(ctx, req.GetName())
	if err != nil {
		return nil, err
	}
	if !sub.Enabled {
		return nil, connect.Errorf(connect.CodeFailedPrecondition, "subscription %q is disabled (%s); enable it first", sub.Name, sub.DisabledReason)
	}
	e, err := s.reg.PingSubscription(ctx, sub, auth.AuditEvent(ctx, "subscription/"+sub.ID, map[string]any{"name": sub.Name}))
	if err != nil {
		return nil, toConnect(err)
	}
	s.wakeDeliveries()
	return &casarev1.TestSubscriptionResponse{EventId: e.ID}, nil
}

func (s *webhookService) ListDeliveries(ctx context.Context, req *casarev1.ListDeliveriesRequest) (*casarev1.ListDeliveriesResponse, error) {
	sub, err := s.subscription(ctx, req.GetName())
	if err != nil {
		return nil, err
	}
	attempts, next, err := s.reg.ListDeliveryAttempts(ctx, sub.ID, registry.Page{Size: int(req.GetPageSize()), Token: req.GetPageToken()})
	if err != nil {
		return nil, toConnect(err)
	}
	res := &casarev1.ListDeliveriesResponse{Attempts: make([]*casarev1.DeliveryAttempt, len(attempts)), NextPageToken: next}
	for i, a := range attempts {
		res.Attempts[i] = &casarev1.DeliveryAttempt{EventId: a.EventID, EventType: a.EventType, Time: timestamp(a.Time),
			StatusCode: a.StatusCode, LatencyMs: a.LatencyMillis, Error: a.Error, Outcome: a.Outcome}
	}
	return res, nil
}

// RedeliverEvent queues one event again, for one subscription or for all
// that had it.
func (s *webhookService) RedeliverEvent(ctx context.Context, req *casarev1.RedeliverEventRequest) (*casarev1.RedeliverEventResponse, error) {
	auth.SetAuditTarget(ctx, "event/"+req.GetEventId())
	subID := ""
	if req.GetName() != "" {
		sub, err := s.subscription(ctx, req.GetName())
		if err != nil {
			return nil, err
		}
		subID = sub.ID
	}
	n, err := s.reg.RedeliverEvent(ctx, req.GetEventId(), subID,
		auth.AuditEvent(ctx, "event/"+req.GetEventId(), map[string]any{"subscription": req.GetName()}))
	if errors.Is(err, registry.ErrNotFound) {
		return nil, connect.Errorf(connect.CodeNotFound, "event %q has no delivery to redo: unknown, never for that subscription, or in flight now", req.GetEventId())
	}
	if err != nil {
		return nil, toConnect(err)
	}
	s.wakeDeliveries()
	return &casarev1.RedeliverEventResponse{Deliveries: int32(n)}, nil
}

func (s *webhookService) wakeDeliveries() {
	if s.deliveries != nil {
		s.deliveries.Wake()
	}
}

func subscriptionToProto(s *registry.Subscription) *casarev1.Subscription {
	return &casarev1.Subscription{
		Id:                  s.ID,
		Name:                s.Name,
		Url:                 s.URL,
		EventTypes:          s.Types(),
		WorkflowName:        s.WorkflowName,
		Enabled:             s.Enabled,
		DisabledReason:      s.DisabledReason,
		ConsecutiveFailures: s.ConsecutiveFailures,
		CreatedBy:           s.CreatedBy,
		CreatedAt:           timestamp(s.CreatedAt),
		UpdatedAt:           timestamp(s.UpdatedAt),
	}
}

// RenderEvent returns the data of an event's payload: the resource as the
// API shows it, in protojson (camelCase), under its kind: {"job": {…}},
// {"robot": {…}}, {"subscription": {…}}. A resource deleted since (a job
// pruned by retention) is shown by its id alone.
func (s *Services) RenderEvent(ctx context.Context, e *registry.Event) (json.RawMessage, error) {
	var msg proto.Message
	var err error
	switch e.ResourceKind {
	case registry.ResourceJob:
		var job *registry.Job
		if job, err = s.reg.GetJob(ctx, e.ResourceID); err == nil {
			msg = s.jobToProto(job)
		}
	case registry.ResourceRobot:
		var rb *registry.Robot
		if rb, err = s.reg.GetRobot(ctx, e.ResourceID); err == nil {
			msg = robotToProto(rb)
		}
	case registry.ResourceSchedule:
		var sch *registry.Schedule
		if sch, err = s.reg.GetScheduleByID(ctx, e.ResourceID); err == nil {
			msg = scheduleToProto(sch, "")
		}
	case registry.ResourceSubscription:
		var sub *registry.Subscription
		if sub, err = s.reg.GetSubscription(ctx, e.ResourceID); err == nil {
			msg = subscriptionToProto(sub)
		}
	}
	var resource json.RawMessage
	switch {
	case errors.Is(err, registry.ErrNotFound) || msg == nil:
		resource, _ = json.Marshal(map[string]string{"id": e.ResourceID})
	case err != nil:
		return nil, err
	default:
		if resource, err = (protojson.MarshalOptions{}).Marshal(msg); err != nil {
			return nil, err
		}
	}
	return json.Marshal(map[string]json.RawMessage{strings.ToLower(e.ResourceKind): resource})
}
