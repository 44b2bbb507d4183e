// The msgpack tether profile for tether::Value (see value_codec.hpp and docs/protocol.md 8.1).
#include "api/value_codec.hpp"

#include <cstring>

#include "wire/msgpack_util.hpp"

namespace tether::api {
namespace {

constexpr std::size_t kSegmentThreshold = 64 * 1024;
constexpr int kMaxDepth = 200;
enum Ext : std::int8_t { tuple_ext = 1, set_ext = 2, frozenset_ext = 3, bigint_ext = 4, segment_ext = 5, custom_ext = 6, ref_ext = 7 };

Error bad(std::string message) { return Error{ErrorKind::bad_request, std::move(message)}; }

// ---- encoding ----

class Encoder {
 public:
  Encoder(wire::OutFrame& frame, const EncodeContext& context) : frame_(frame), context_(context), sink_{&frame.payload}, packer_(sink_) {}

  Status value(const Value& v, int depth = 0) {
    if (depth > kMaxDepth) return bad("a value nested deeper than 200 levels cannot be sent");
    using K = Value::Kind;
    switch (v.kind()) {
      case K::nil: packer_.pack_nil(); return ok_status();
      case K::boolean: v.as_bool() ? packer_.pack_true() : packer_.pack_false(); return ok_status();
      case K::integer:
        if (!v.fits_int64()) packer_.pack_uint64(v.as_uint64());
        else if (auto i = v.as_int64(); i < 0) packer_.pack_int64(i);
        else packer_.pack_uint64(static_cast<std::uint64_t>(i));
        return ok_status();
      case K::big_integer: {
        BigInt big = v.as_big_int();
        const auto& bytes = big.bytes();
        return ext(bigint_ext, {reinterpret_cast<const std::byte*>(bytes.data()), bytes.size()});
      }
      case K::floating: return float64(v.as_double());
      case K::string:
        wire::pack_str(packer_, v.as_string());
        return ok_status();
      case K::bytes: return bytes(v.as_bytes());
      case K::list: return items(v.items(), depth);
      case K::tuple: return nested(tuple_ext, depth, [&](Encoder& e) { return e.items(v.items(), depth + 1); });
      case K::set: return nested(set_ext, depth, [&](Encoder& e) { return e.items(v.items(), depth + 1); });
      case K::frozenset: return nested(frozenset_ext, depth, [&](Encoder& e) { return e.items(v.items(), depth + 1); });
      case K::dict:
        packer_.pack_map(static_cast<std::uint32_t>(v.entries().size()));
        for (const auto& [key, item] : v.entries()) {
          if (auto s = value(key, depth + 1); !s) return s;
          if (auto s = value(item, depth + 1); !s) return s;
        }
        return ok_status();
      case K::custom:
        return nested(custom_ext, depth, [&](Encoder& e) {
          e.packer_.pack_array(2);
          wire::pack_str(e.packer_, v.custom_name());
          return e.value(v.custom_state(), depth + 1);
        });
      case K::object_ref: return reference(*v.ref(), depth);
    }
    return bad("unknown value kind");
  }

  Status items(const Value::Items& items, int depth) {
    packer_.pack_array(static_cast<std::uint32_t>(items.size()));
    for (const auto& item : items)
      if (auto s = value(item, depth + 1); !s) return s;
    return ok_status();
  }

 private:
  Status float64(double d) {
    std::uint64_t bits;
    std::memcpy(&bits, &d, sizeof bits);
    frame_.payload.push_back(std::byte{0xcb});
    for (int shift = 56; shift >= 0; shift -= 8) frame_.payload.push_back(static_cast<std::byte>((bits >> shift) & 0xff));
    return ok_status();
  }

  Status bytes(const Bytes& b) {
    if (b.size() < kSegmentThreshold) {
      packer_.pack_bin(static_cast<std::uint32_t>(b.size()));
      packer_.pack_bin_body(reinterpret_cast<const char*>(b.data()), static_cast<std::uint32_t>(b.size()));
      return ok_status();
    }
    auto index = static_cast<std::uint32_t>(frame_.segments.size());
    std::byte le[4];
    for (int i = 0; i < 4; ++i) le[i] = static_cast<std::byte>((index >> (8 * i)) & 0xff);
    frame_.segments.push_back({b.span(), std::const_pointer_cast<void>(b.owner())});
    return ext(segment_ext, le);
  }

  Status ext(std::int8_t type, std::span<const std::byte> data) {
    packer_.pack_ext(static_cast<std::uint32_t>(data.size()), type);
    packer_.pack_ext_body(reinterpret_cast<const char*>(data.data()), static_cast<std::uint32_t>(data.size()));
    return ok_status();
  }

  // An ext whose data is itself msgpack: encoded apart (segments still go to the frame), then wrapped.
  template <typename Inner>
  Status nested(std::int8_t type, int depth, Inner inner) {
    if (depth + 1 > kMaxDepth) return bad("a value nested deeper than 200 levels cannot be sent");
    std::vector<std::byte> saved;
    saved.swap(frame_.payload);
    Encoder sub(frame_, context_);
    Status s = inner(sub);
    std::vector<std::byte> data;
    data.swap(frame_.payload);
    frame_.payload.swap(saved);
    if (!s) return s;
    return ext(type, data);
  }

  Status reference(const detail::RefData& ref, int depth) {
    using RK = detail::RefData::Kind;
    if (ref.kind == RK::peer_callback) {
      auto connection = ref.connection.lock();
      return bad(connection && connection.get() == context_.connection
                     ? "a callback proxy cannot be sent back to the peer that exported it"
                     : "a callback proxy belongs to its own connection and cannot be passed on");
    }
    if (ref.kind == RK::local_servant && !context_.exports) return bad("a callback cannot be sent here");
    return nested(ref_ext, depth, [&](Encoder& e) {
      e.packer_.pack_array(2);
      if (ref.kind == RK::uri) {
        e.packer_.pack_uint8(1);
        wire::pack_str(e.packer_, ref.uri);
      } else {
        e.packer_.pack_uint8(0);
        e.packer_.pack_uint64(context_.exports->export_servant(ref.servant));
      }
      return ok_status();
    });
  }

  wire::OutFrame& frame_;
  const EncodeContext& context_;
  wire::ByteSink sink_;
  wire::Packer packer_;
};

// ---- decoding ----

bool valid_utf8(std::string_view s) {
  std::size_t i = 0;
  while (i < s.size()) {
    auto c = static_cast<unsigned char>(s[i]);
    if (c < 0x80) {
      ++i;
      continue;
    }
    std::size_t n;
    std::uint32_t cp;
    if ((c >> 5) == 6) n = 1, cp = c & 0x1f;
    else if ((c >> 4) == 14) n = 2, cp = c & 0x0f;
    else if ((c >> 3) == 30) n = 3, cp = c & 0x07;
    else return false;
    if (i + n >= s.size()) return false;
    for (std::size_t k = 1; k <= n; ++k) {
      auto cc = static_cast<unsigned char>(s[i + k]);
      if ((cc >> 6) != 2) return false;
      cp = (cp << 6) | (cc & 0x3f);
    }
    bool overlong = (n == 1 && cp < 0x80) || (n == 2 && cp < 0x800) || (n == 3 && cp < 0x10000);
    if (overlong || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return false;
    i += n + 1;
  }
  return true;
}

class Decoder {
 public:
  Decoder(std::span<const std::byte> data, const DecodeContext& context)
      : p_(reinterpret_cast<const std::uint8_t*>(data.data())), end_(p_ + data.size()), context_(context) {}

  Result<Value> whole(int depth) {
    auto v = value(depth);
    if (v && p_ != end_) return bad("bytes left over after the value");
    return v;
  }

 private:
  std::size_t left() const { return static_cast<std::size_t>(end_ - p_); }

  template <typename T>
  bool read_be(T& out) {
    if (left() < sizeof(T)) return false;
    std::uint64_t v = 0;
    for (std::size_t i = 0; i < sizeof(T); ++i) v = (v << 8) | p_[i];
    p_ += sizeof(T);
    out = static_cast<T>(v);
    return true;
  }

  Result<std::string_view> raw(std::size_t n) {
    if (left() < n) return bad("truncated data");
    std::string_view out(reinterpret_cast<const char*>(p_), n);
    p_ += n;
    return out;
  }

  Result<Value> value(int depth) {
    if (depth > kMaxDepth) return bad("nested deeper than 200 levels");
    if (!left()) return bad("truncated data");
    std::uint8_t t = *p_++;
    if (t <= 0x7f) return Value(static_cast<long long>(t));
    if (t >= 0xe0) return Value(static_cast<long long>(static_cast<std::int8_t>(t)));
    if ((t & 0xf0) == 0x80) return map(t & 0x0f, depth);
    if ((t & 0xf0) == 0x90) return array(t & 0x0f, depth);
    if ((t & 0xe0) == 0xa0) return str(t & 0x1f);
    switch (t) {
      case 0xc0: return Value();
      case 0xc2: return Value(false);
      case 0xc3: return Value(true);
      case 0xc4: return sized<std::uint8_t>([this](std::size_t n) { return bin(n); });
      case 0xc5: return sized<std::uint16_t>([this](std::size_t n) { return bin(n); });
      case 0xc6: return sized<std::uint32_t>([this](std::size_t n) { return bin(n); });
      case 0xc7: return sized<std::uint8_t>([this, depth](std::size_t n) { return ext(n, depth); });
      case 0xc8: return sized<std::uint16_t>([this, depth](std::size_t n) { return ext(n, depth); });
      case 0xc9: return sized<std::uint32_t>([this, depth](std::size_t n) { return ext(n, depth); });
      case 0xca: {
        std::uint32_t bits;
        if (!read_be(bits)) return bad("truncated float");
        float f;
        std::memcpy(&f, &bits, 4);
        return Value(f);
      }
      case 0xcb: {
        std::uint64_t bits;
        if (!read_be(bits)) return bad("truncated float");
        double d;
        std::memcpy(&d, &bits, 8);
        return Value(d);
      }
      case 0xcc: return integer<std::uint8_t>();
      case 0xcd: return integer<std::uint16_t>();
      case 0xce: return integer<std::uint32_t>();
      case 0xcf: return integer<std::uint64_t>();
      case 0xd0: return integer<std::int8_t>();
      case 0xd1: return integer<std::int16_t>();
      case 0xd2: return integer<std::int32_t>();
      case 0xd3: return integer<std::int64_t>();
      case 0xd4: return ext(1, depth);
      case 0xd5: return ext(2, depth);
      case 0xd6: return ext(4, depth);
      case 0xd7: return ext(8, depth);
      case 0xd8: return ext(16, depth);
      case 0xd9: return sized<std::uint8_t>([this](std::size_t n) { return str(n); });
      case 0xda: return sized<std::uint16_t>([this](std::size_t n) { return str(n); });
      case 0xdb: return sized<std::uint32_t>([this](std::size_t n) { return str(n); });
      case 0xdc: return sized<std::uint16_t>([this, depth](std::size_t n) { return array(n, depth); });
      case 0xdd: return sized<std::uint32_t>([this, depth](std::size_t n) { return array(n, depth); });
      case 0xde: return sized<std::uint16_t>([this, depth](std::size_t n) { return map(n, depth); });
      case 0xdf: return sized<std::uint32_t>([this, depth](std::size_t n) { return map(n, depth); });
    }
    return bad("unknown msgpack type byte");
  }

  template <typename Size, typename Read>
  Result<Value> sized(Read read) {
    Size n;
    if (!read_be(n)) return bad("truncated length");
    return read(static_cast<std::size_t>(n));
  }

  template <typename T>
  Result<Value> integer() {
    T v;
    if (!read_be(v)) return bad("truncated integer");
    if constexpr (std::is_signed_v<T>) return Value(static_cast<long long>(v));
    else return Value(static_cast<unsigned long long>(v));
  }

  Result<Value> str(std::size_t n) {
    auto text = raw(n);
    if (!text) return text.error();
    if (!valid_utf8(*text)) return bad("a str is not valid UTF-8");
    return Value(*text);
  }

  Result<Value> bin(std::size_t n) {
    if (left() < n) return bad("truncated bytes");
    auto* data = reinterpret_cast<const std::byte*>(p_);
    p_ += n;
    if (!context_.owner || n < 256) return Value(Bytes(data, n));
    return Value(Bytes(context_.owner, data, n));
  }

  Result<Value> array(std::size_t n, int depth) {
    if (n > left()) return bad("an array declares more items than the data holds");
    Value::Items items;
    items.reserve(n);
    for (std::size_t i = 0; i < n; ++i) {
      auto item = value(depth + 1);
      if (!item) return item.error();
      items.push_back(std::move(*item));
    }
    return Value(std::move(items));
  }

  Result<Value> map(std::size_t n, int depth) {
    if (n > left() / 2) return bad("a map declares more entries than the data holds");
    Value::Entries entries;
    entries.reserve(n);
    for (std::size_t i = 0; i < n; ++i) {
      auto key = value(depth + 1);
      if (!key) return key.error();
      auto item = value(depth + 1);
      if (!item) return item.error();
      entries.emplace_back(std::move(*key), std::move(*item));
    }
    return Value::dict(std::move(entries));
  }

  Result<Value> ext(std::size_t n, int depth) {
    if (!left()) return bad("truncated ext");
    auto type = static_cast<std::int8_t>(*p_++);
    if (left() < n) return bad("truncated ext data");
    std::span<const std::byte> data(reinterpret_cast<const std::byte*>(p_), n);
    p_ += n;
    switch (type) {
      case tuple_ext:
      case set_ext:
      case frozenset_ext: {
        auto inner = Decoder(data, context_).whole(depth + 1);
        if (!inner) return inner.error();
        if (inner->kind() != Value::Kind::list) return bad("a tuple or set ext does not hold an array");
        if (type == tuple_ext) return Value::tuple(std::move(inner->items()));
        return Value::set(std::move(inner->items()), type == frozenset_ext);
      }
      case bigint_ext: {
        if (n == 0) return bad("an empty big int");
        std::vector<std::uint8_t> bytes(n);
        std::memcpy(bytes.data(), data.data(), n);
        return Value(BigInt::from_bytes(std::move(bytes)));
      }
      case segment_ext: {
        if (n != 4) return bad("a segment reference is not 4 bytes");
        std::uint32_t index = 0;
        for (int i = 0; i < 4; ++i) index |= std::uint32_t(static_cast<std::uint8_t>(data[i])) << (8 * i);
        if (index >= context_.segments.size()) return bad("a segment index is out of range");
        const auto& segment = context_.segments[index];
        return Value(Bytes(context_.owner, segment.data(), segment.size()));
      }
      case custom_ext: {
        auto inner = Decoder(data, context_).whole(depth + 1);
        if (!inner) return inner.error();
        if (inner->kind() != Value::Kind::list || inner->size() != 2 || (*inner)[0].kind() != Value::Kind::string ||
            (*inner)[0].as_string().empty())
          return bad("a custom value is not [name, state]");
        return Value::custom((*inner)[0].as_string(), (*inner)[1]);
      }
      case ref_ext: return reference(data, depth);
    }
    return bad("unknown ext type " + std::to_string(type));
  }

  Result<Value> reference(std::span<const std::byte> data, int depth) {
    auto inner = Decoder(data, context_).whole(depth + 1);
    if (!inner) return inner.error();
    if (inner->kind() != Value::Kind::list || inner->size() != 2 || !(*inner)[0].is_int())
      return bad("an object reference is not [kind, value]");
    auto ref = std::make_shared<detail::RefData>();
    ref->home = context_.home;
    const Value& kind = (*inner)[0];
    const Value& target = (*inner)[1];
    if (kind == Value(0) && target.is_int() && !target.as_big_int().negative()) {
      ref->kind = detail::RefData::Kind::peer_callback;
      ref->id = target.as_uint64();
      ref->connection = context_.connection;
    } else if (kind == Value(1) && target.kind() == Value::Kind::string) {
      ref->kind = detail::RefData::Kind::uri;
      ref->uri = target.as_string();
    } else {
      return bad("an object reference has an unknown kind or a value of the wrong type");
    }
    return Value::from_ref(std::move(ref));
  }

  const std::uint8_t* p_;
  const std::uint8_t* end_;
  const DecodeContext& context_;
};

}  // namespace

Status encode_value(const Value& value, wire::OutFrame& frame, const EncodeContext& context) {
  return Encoder(frame, context).value(value);
}

Status encode_request_body(const Value::Items& args, const Value::Entries& kwargs, wire::OutFrame& frame,
                           const EncodeContext& context) {
  Encoder encoder(frame, context);
  frame.payload.push_back(std::byte{0x92});
  if (auto s = encoder.items(args, 0); !s) return s;
  if (kwargs.empty()) {
    frame.payload.push_back(std::byte{0xc0});
    return ok_status();
  }
  for (const auto& [key, value] : kwargs)
    if (key.kind() != Value::Kind::string) return bad("keyword argument names must be str, got " + std::string(key.kind_name()));
  return encoder.value(Value::dict(kwargs));
}

Result<Value> decode_value(std::span<const std::byte> data, const DecodeContext& context) {
  auto v = Decoder(data, context).whole(0);
  if (!v) return bad("undecodable msgpack payload: " + v.error().message);
  return v;
}

Result<Value> decode_frame_body(wire::Frame&& frame, DecodeContext context) {
  auto owned = std::make_shared<wire::Frame>(std::move(frame));
  std::span<const std::byte> main = owned->body_span();
  std::vector<std::span<const std::byte>> segments;
  if (owned->header.flags & wire::kSegments) {
    auto split = wire::split_segments(*owned);
    if (!split) return split.error();
    main = split->main;
    segments = std::move(split->segments);
  }
  if (owned->header.encoding != wire::Encoding::msgpack) return bad("only the msgpack encoding is spoken here");
  context.segments = segments;
  context.owner = owned;
  return decode_value(main, context);
}

}  // namespace tether::api
