package registry

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"
)

func newTrigger(name, workflow string) *Trigger {
	return &Trigger{
		ID:           NewID(),
		Name:         name,
		WorkflowName: workflow,
		Inputs:       `{"order":"body.id"}`,
		Priority:     PriorityNormal,
		Requires:     "{}",
		Auth:         TriggerAuthStandardWebhooks,
		Secret:       "whsec_first",
		CreatedBy:    "tester",
	}
}

func TestTriggers(t *testing.T) {
	forEachBackend(t, func(t *testing.T, r *Registry) {
		ctx := context.Background()
		first := newTrigger("orders", "invoice-sync")
		audit := &AuditEvent{Actor: "tester", Action: "create", Target: "trigger/" + first.ID, Outcome: "ok"}
		if err := r.CreateTrigger(ctx, first, audit); err != nil {
			t.Fatal(err)
		}
		t.Run("ErrAlreadyExists", func(t *testing.T) {
			if err := r.CreateTrigger(ctx, newTrigger("orders", "other"), nil); !errors.Is(err, ErrAlreadyExists) {
				t.Fatalf("a second trigger named orders: %v, want ErrAlreadyExists", err)
			}
		})
		for _, key := range []string{first.ID, "orders"} {
			got, err := r.GetTrigger(ctx, key)
			if err != nil || got.ID != first.ID || got.Secret != "whsec_first" || got.Inputs != first.Inputs {
				t.Fatalf("GetTrigger(%q) = %+v, %v; want the trigger created", key, got, err)
			}
		}
		if _, err := r.TriggerByID(ctx, "orders"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("TriggerByID(name) = %v; the hook endpoint must take ids only", err)
		}
		if _, err := r.GetTrigger(ctx, "nope"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("GetTrigger(nope) = %v, want ErrNotFound", err)
		}

		t.Run("List", func(t *testing.T) {
			for i := range 5 {
				if err := r.CreateTrigger(ctx, newTrigger(fmt.Sprintf("t%d", i), "reports"), nil); err != nil {
					t.Fatal(err)
				}
			}
			var names []string
			page := Page{Size: 2}
			for {
				list, next, err := r.ListTriggers(ctx, TriggerFilter{WorkflowName: "reports"}, page)
				if err != nil {
					t.Fatal(err)
				}
				for _, tr := range list {
					names = append(names, tr.Name)
				}
				if next == "" {
					break
				}
				page.Token = next
			}
			if fmt.Sprint(names) != "[t0 t1 t2 t3 t4]" {
				t.Fatalf("paged list of reports' triggers = %v", names)
			}
			if _, _, err := r.ListTriggers(ctx, TriggerFilter{}, Page{Token: page.Token}); !errors.Is(err, ErrInvalidPageToken) {
				t.Fatalf("a token of another filter: %v, want ErrInvalidPageToken", err)
			}
		})

		t.Run("Rotate", func(t *testing.T) {
			until := time.Now().Add(time.Hour)
			audit := &AuditEvent{Actor: "tester", Action: "rotate", Outcome: "ok"}
			got, err := r.RotateTriggerSecret(ctx, "orders", "whsec_second", until, audit)
			if err != nil {
				t.Fatal(err)
			}
			if got.Secret != "whsec_second" || got.PreviousSecret != "whsec_first" || got.PreviousSecretExpiresAt == nil ||
				!got.PreviousSecretExpiresAt.Equal(until.UTC().Truncate(time.Microsecond)) {
				t.Fatalf("after rotation: %+v", got)
			}
			stored, err := r.GetTrigger(ctx, first.ID)
			if err != nil || stored.Secret != "whsec_second" || stored.PreviousSecret != "whsec_first" {
				t.Fatalf("stored after rotation: %+v, %v", stored, err)
			}
			events, _, err := r.ListAudit(ctx, AuditFilter{Target: "trigger/" + first.ID}, Page{})
			if err != nil || len(events) != 2 {
				t.Fatalf("audit of the trigger = %v, %v; want its create and rotate", events, err)
			}
			if _, err := r.RotateTriggerSecret(ctx, "nope", "x", until, nil); !errors.Is(err, ErrNotFound) {
				t.Fatalf("rotating no trigger: %v", err)
			}
		})

		t.Run("Update", func(t *testing.T) {
			change := newTrigger("orders", "invoice-sync-v2")
			change.Inputs, change.RatePerSecond, change.Burst, change.Secret = `{"order":"query.id"}`, 5, 7, "ignored"
			got, err := r.UpdateTrigger(ctx, change, &AuditEvent{Actor: "tester", Action: "update", Outcome: "ok"})
			if err != nil {
				t.Fatal(err)
			}
			stored, err := r.GetTrigger(ctx, "orders")
			if err != nil || got.ID != first.ID || stored.WorkflowName != "invoice-sync-v2" || stored.Inputs != `{"order":"query.id"}` ||
				stored.RatePerSecond != 5 || stored.Burst != 7 || stored.Secret != "whsec_second" || stored.ID != first.ID {
				t.Fatalf("after update: %+v, %v; want the new mapping and rate, the same id and secret", stored, err)
			}
			if _, err := r.UpdateTrigger(ctx, newTrigger("nope", "x"), nil); !errors.Is(err, ErrNotFound) {
				t.Fatalf("updating no trigger: %v", err)
			}
		})

		t.Run("Delete", func(t *testing.T) {
			audit := &AuditEvent{Actor: "tester", Action: "delete", Outcome: "ok"}
			got, err := r.DeleteTrigger(ctx, "orders", audit)
			if err != nil || got.ID != first.ID {
				t.Fatalf("DeleteTrigger = %+v, %v", got, err)
			}
			if audit.Target != "trigger/"+first.ID {
				t.Fatalf("audit target %q, want the trigger's id", audit.Target)
			}
			if _, err := r.GetTrigger(ctx, first.ID); !errors.Is(err, ErrNotFound) {
				t.Fatalf("deleted trigger still found: %v", err)
			}
			if _, err := r.DeleteTrigger(ctx, "orders", nil); !errors.Is(err, ErrNotFound) {
				t.Fatalf("deleting twice: %v", err)
			}
			// The name is free again.
			if err := r.CreateTrigger(ctx, newTrigger("orders", "invoice-sync"), nil); err != nil {
				t.Fatal(err)
			}
		})
	})
}
