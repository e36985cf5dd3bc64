// placeholder, replaced by the runtime sources
namespace otpp::detail { int runtime_placeholder = 0; }
