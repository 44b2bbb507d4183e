// tether::Value: its encoding (round trips and the bounds of docs/protocol.md 8.1) and conversions.
#include <gtest/gtest.h>

#include "api/value_codec.hpp"
#include "tether/convert.hpp"

namespace tether {
namespace {

Value round_trip(const Value& v) {
  wire::OutFrame frame;
  auto encoded = api::encode_value(v, frame, {});
  EXPECT_TRUE(encoded) << encoded.error().message;
  std::vector<std::span<const std::byte>> segments;
  for (const auto& s : frame.segments) segments.push_back(s.bytes);
  auto decoded = api::decode_value(frame.payload, api::DecodeContext{segments, {}, {}, {}});
  EXPECT_TRUE(decoded) << decoded.error().message;
  return decoded ? *decoded : Value("<undecodable>");
}

Result<Value> decode_bytes(std::initializer_list<int> bytes) {
  std::vector<std::byte> data;
  for (int b : bytes) data.push_back(static_cast<std::byte>(b));
  return api::decode_value(data, {});
}

TEST(Value, EveryKindRoundTrips) {
  std::vector<Value> values = {
      Value(),
      Value(true),
      Value(-5),
      Value(std::uint64_t{18446744073709551615ull}),
      Value(BigInt::from_string("123456789012345678901234567890")),
      Value(BigInt::from_string("-98765432109876543210")),
      Value(2.0),
      Value(-0.0),
      Value("héllo"),
      Value::bytes(std::string("\x00\x01\xff", 3)),
      Value::bytes(std::string(70000, 'x')),  // out of band
      Value{1, "a", Value()},
      Value::tuple({1, 2.5}),
      Value::set({1, 2, 3}),
      Value::set({"x"}, true),
      Value::dict({{Value("k"), Value{1, 2}}, {Value::tuple({1, 2}), Value(false)}}),
      Value::custom("Point", Value::dict({{Value("x"), Value(1.0)}})),
      Value::array(Array::of(std::vector<double>{1.5, 2.5, 3.5})),
      Value::uri_ref("tether://127.0.0.1:1/calc"),
  };
  for (const auto& v : values) EXPECT_EQ(round_trip(v), v) << v.repr();
}

TEST(Value, FloatsStayFloatsAndIntsStayInts) {
  EXPECT_EQ(round_trip(Value(2.0)).kind(), Value::Kind::floating);
  EXPECT_EQ(round_trip(Value(2)).kind(), Value::Kind::integer);
  EXPECT_FALSE(Value(1) == Value(1.0));
  EXPECT_FALSE(Value(true) == Value(1));
}

TEST(Value, BigIntsConvertToAndFromDecimal) {
  for (const char* text : {"0", "-1", "127", "128", "-128", "-129", "18446744073709551616", "-9223372036854775809",
                           "340282366920938463463374607431768211456"})
    EXPECT_EQ(BigInt::from_string(text).to_string(), text);
  EXPECT_EQ(Value(BigInt::from_string("-9223372036854775808")).as_int64(), INT64_MIN);
  EXPECT_EQ(Value(BigInt::from_string("18446744073709551615")).as_uint64(), UINT64_MAX);
  EXPECT_EQ(Value(BigInt::from_string("18446744073709551616")).kind(), Value::Kind::big_integer);
  EXPECT_THROW(BigInt::from_string("12a"), TypeMismatch);
}

TEST(Value, MalformedPayloadsAreRefused) {
  EXPECT_FALSE(decode_bytes({0xdd, 0xff, 0xff, 0xff, 0xff}));   // an array claiming 4 billion items
  EXPECT_FALSE(decode_bytes({0xdf, 0x00, 0x00, 0x00, 0x02, 1, 2, 3}));  // a map claiming more than the data
  EXPECT_FALSE(decode_bytes({0xa2, 0xc3, 0x28}));              // invalid UTF-8
  EXPECT_FALSE(decode_bytes({0x01, 0x02}));                    // bytes left over
  EXPECT_FALSE(decode_bytes({0xd6, 0x05, 0, 0, 0, 0}));        // a segment that does not exist
  EXPECT_FALSE(decode_bytes({0xd4, 0x09, 0x00}));              // an unknown ext
  EXPECT_FALSE(decode_bytes({0xc1}));                          // a never-used type byte
  EXPECT_FALSE(decode_bytes({0xd9, 0x05, 'a'}));               // truncated str
  std::vector<std::byte> deep(300, std::byte{0x91});
  deep.push_back(std::byte{0xc0});
  EXPECT_FALSE(api::decode_value(deep, {}));                   // nested deeper than 200 levels
}

TEST(Value, TooDeepValuesAreNotSent) {
  Value v;
  for (int i = 0; i < 250; ++i) v = Value{v};
  wire::OutFrame frame;
  EXPECT_FALSE(api::encode_value(v, frame, {}));
}

TEST(Value, ReadersNameWhatTheyExpectedAndFound) {
  try {
    Value("x").as_int64();
    FAIL();
  } catch (const TypeMismatch& e) {
    EXPECT_STREQ(e.what(), "expected an int, got str 'x'");
  }
  EXPECT_THROW(from_value<std::int8_t>(Value(300)), OutOfRange);
  EXPECT_THROW(from_value<std::uint32_t>(Value(-1)), OutOfRange);
  EXPECT_THROW(Value(BigInt::from_string("99999999999999999999999")).as_int64(), OutOfRange);
}

struct Point {
  double x = 0;
  double y = 0;
  std::string label;
};
TETHER_STRUCT(Point, x, y, label)

TEST(Convert, ContainersAndStructs) {
  std::map<std::string, std::vector<std::int64_t>> m{{"a", {1, 2}}, {"b", {}}};
  EXPECT_EQ(from_value<decltype(m)>(round_trip(to_value(m))), m);
  std::optional<std::string> none;
  EXPECT_TRUE(to_value(none).is_nil());
  EXPECT_EQ(from_value<std::optional<std::string>>(Value("s")), "s");
  auto t = std::make_tuple(1, std::string("two"), 3.0);
  EXPECT_EQ(to_value(t).kind(), Value::Kind::tuple);
  EXPECT_EQ(from_value<decltype(t)>(round_trip(to_value(t))), t);
  std::set<std::int64_t> s{3, 1, 2};
  EXPECT_EQ(from_value<std::set<std::int64_t>>(round_trip(to_value(s))), s);
  Point p{1.5, -2, "here"};
  Value pv = to_value(p);
  EXPECT_EQ(pv.kind(), Value::Kind::dict);
  EXPECT_EQ(pv.find(Value("label"))->as_string(), "here");
  Point back = from_value<Point>(round_trip(pv));
  EXPECT_EQ(back.x, 1.5);
  EXPECT_EQ(back.label, "here");
  try {
    from_value<Point>(Value::dict({{Value("x"), Value(1.0)}, {Value("y"), Value("no")}, {Value("label"), Value("")}}));
    FAIL();
  } catch (const TypeMismatch& e) {
    EXPECT_NE(std::string(e.what()).find("Point field 'y'"), std::string::npos) << e.what();
  }
}

TEST(Convert, VectorsReadArraysOfTheirType) {
  Value array = Value::array(Array::of(std::vector<std::int32_t>{1, 2, 3}));
  EXPECT_EQ(from_value<std::vector<std::int32_t>>(array), (std::vector<std::int32_t>{1, 2, 3}));
  EXPECT_THROW(from_value<std::vector<double>>(array), TypeMismatch);
  EXPECT_EQ(array.as_array().dtype, "<i4");
}

}  // namespace
}  // namespace tether

#include "api/pickle.hpp"

namespace tether {
namespace {

TEST(Pickle, PlainValuesRoundTrip) {
  std::vector<Value> values = {Value(), Value(false), Value(7), Value(-(1LL << 40)), Value(std::uint64_t{UINT64_MAX}),
                               Value(BigInt::from_string("-340282366920938463463374607431768211457")), Value(0.25),
                               Value("naïve"), Value::bytes(std::string(300, 'b')), Value{1, Value{2, Value()}},
                               Value::tuple({}), Value::tuple({1}), Value::set({1, 2}), Value::set({"x"}, true),
                               Value::dict({{Value("a"), Value::dict({{Value(1), Value::list()}})}})};
  for (const auto& v : values) {
    auto pickled = api::pickle_plain(v);
    ASSERT_TRUE(pickled) << v.repr();
    auto back = api::unpickle_plain(*pickled);
    ASSERT_TRUE(back) << back.error().message;
    EXPECT_EQ(*back, v) << v.repr();
  }
  EXPECT_FALSE(api::pickle_plain(Value::custom("x", 1)));
}

TEST(Pickle, ReadsOnlyWhatItUnderstands) {
  auto bytes = [](std::initializer_list<int> list) {
    std::vector<std::byte> out;
    for (int b : list) out.push_back(static_cast<std::byte>(b));
    return out;
  };
  EXPECT_FALSE(api::unpickle_plain(bytes({0x80, 4, 'N'})));             // no STOP
  EXPECT_FALSE(api::unpickle_plain(bytes({0x80, 4, 'a', '.'})));        // APPEND on nothing
  EXPECT_FALSE(api::unpickle_plain(bytes({0x80, 4, 'h', 9, '.'})));     // a memo entry never put
  EXPECT_FALSE(api::unpickle_plain(bytes({0x80, 4, 'i', '.'})));        // INST: not plain data
  EXPECT_FALSE(api::unpickle_plain(bytes({0x80, 4, 'X', 0xff, 0xff, 0xff, 0x7f, '.'})));  // a str longer than the data
  auto global = api::unpickle_plain(bytes({0x80, 4, 0x8c, 8, 'b', 'u', 'i', 'l', 't', 'i', 'n', 's', 0x8c, 8, 'K', 'e', 'y',
                                           'E', 'r', 'r', 'o', 'r', 0x93, 0x8c, 1, 'k', 0x85, 'R', '.'}));
  ASSERT_TRUE(global);
  EXPECT_EQ(global->custom_name(), "pickle.call");
  EXPECT_EQ(global->custom_state()[0].custom_state().as_string(), "builtins.KeyError");
}

}  // namespace
}  // namespace tether
