// Milesight EM310-UDL (ultrasonic distance sensor) uplink codec in The Things Network format.
//
// Written for district-gateway as a test codec for the JavaScript codec runtime
// (src/decode/js.rs). Field names follow the gateway's metric names (battery_pct,
// distance_mm, position), so its output equals the native decoder "milesight-em310-udl".
//
// Payload (FPort 85): a sequence of channel(1) type(1) data(N) records, little-endian.
//   0x01 0x75  battery level, 1 byte, %
//   0x03 0x82  distance, u16 LE, mm
//   0x04 0x00  position, 1 byte: 0 = normal, 1 = tilt
//   0xFF ...   device attributes (only those listed below)

function u16le(bytes, i) {
  return (bytes[i] | (bytes[i + 1] << 8)) & 0xffff;
}

function decodeUplink(input) {
  var bytes = input.bytes;
  var data = {};

  if (input.fPort !== 85) {
    return { errors: ["unsupported FPort " + input.fPort] };
  }
  if (bytes.length === 0) {
    return { errors: ["empty payload"] };
  }

  var i = 0;
  while (i < bytes.length) {
    if (i + 2 > bytes.length) {
      return { data: data, errors: ["payload too short"] };
    }
    var channel = bytes[i];
    var type = bytes[i + 1];
    i += 2;
    var need;
    if (channel === 0x01 && type === 0x75) {
      need = 1;
    } else if (channel === 0x03 && type === 0x82) {
      need = 2;
    } else if (channel === 0x04 && type === 0x00) {
      need = 1;
    } else if (channel === 0xff && type === 0x01) {
      need = 1;
    } else {
      return { data: data, errors: ["unknown channel 0x" + hex(channel) + " type 0x" + hex(type)] };
    }
    if (i + need > bytes.length) {
      return { data: data, errors: ["payload too short"] };
    }

    if (channel === 0x01) {
      data.battery_pct = bytes[i];
    } else if (channel === 0x03) {
      data.distance_mm = u16le(bytes, i);
    } else if (channel === 0x04) {
      var p = bytes[i];
      data.position = p === 0 ? "normal" : p === 1 ? "tilt" : "unknown";
    } else {
      data.protocol_version = bytes[i];
    }
    i += need;
  }

  return { data: data };
}

function hex(b) {
  return (b < 16 ? "0" : "") + b.toString(16);
}
