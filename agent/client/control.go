package client

import (
	"context"
	"net/http"

	"github.com/execq/execq/shared"
)

// Control long-polls for cancel orders (POST /agent/v1/control). An empty
// answer is normal: nothing to stop within the wait.
func (c *Client) Control(ctx context.Context, req shared.ControlRequest) (*shared.ControlResponse, error) {
	var out shared.ControlResponse
	err := c.do(ctx, c.poll, "control poll", http.MethodPost, shared.AgentPathControl, req, &out)
	if err != nil {
		return nil, err
	}
	return &out, nil
}
