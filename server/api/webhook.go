package api

import "github.com/casarerpa/casare/rpc/casare/v1/casarev1connect"

// webhookService serves WebhookService: inbound triggers and outbound event
// subscriptions, each half in a file of its own.
type webhookService struct {
	*Services
	casarev1connect.UnimplementedWebhookServiceHandler
}
