package httpapi

import "golang.org/x/net/websocket"

// TerminalFrame is one WebSocket frame of a terminal: binary frames carry terminal bytes
// (output to the client, typed input to the server), text frames carry JSON control messages
// (TerminalEvent notices to the client, TerminalControl requests to the server).
type TerminalFrame struct {
	Data   []byte
	Binary bool
}

// TerminalCodec sends and receives TerminalFrames, keeping the frame type.
var TerminalCodec = websocket.Codec{
	Marshal: func(v any) ([]byte, byte, error) {
		f := v.(TerminalFrame)
		if f.Binary {
			return f.Data, websocket.BinaryFrame, nil
		}
		return f.Data, websocket.TextFrame, nil
	},
	Unmarshal: func(data []byte, payloadType byte, v any) error {
		*v.(*TerminalFrame) = TerminalFrame{Data: data, Binary: payloadType == websocket.BinaryFrame}
		return nil
	},
}
